-- 0004: a customer's history on every pop (the `history` profile section) reads the newest
-- calls attributed to the customer and counts those of the last 7 days: one index range scan.
CREATE INDEX call_log_customer_started ON call_log (customer_id, started_at DESC)
    WHERE customer_id IS NOT NULL;
