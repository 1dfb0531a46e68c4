-- screenpop schema, version 2: stored match keys for numbers that are not valid numbers, keys
-- that cannot go stale, the agents' candidate picks, and the answering extension in the call log.
-- Applied by `screenpop migrate --database-url URL` in one transaction.

-- The exact-digits match key of a number libphonenumber calls invalid (short codes, internal
-- numbers); NULL when `e164` is set. Filled by screenpop, like `e164`, so that a start-up does
-- not normalise such numbers again.
ALTER TABLE customer_numbers ADD COLUMN digits text;

-- When `raw` changes and the same statement does not set the keys, the stored keys are stale:
-- clear them, and screenpop computes them again.
CREATE FUNCTION screenpop_number_keys_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.raw IS DISTINCT FROM OLD.raw
       AND NEW.e164 IS NOT DISTINCT FROM OLD.e164
       AND NEW.digits IS NOT DISTINCT FROM OLD.digits THEN
        NEW.e164 := NULL;
        NEW.digits := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER customer_numbers_keys_stale BEFORE UPDATE ON customer_numbers
    FOR EACH ROW EXECUTE FUNCTION screenpop_number_keys_stale();

-- The customer an agent picked among the candidates for a caller (by the caller's normalised
-- number): it ranks first for that agent the next time. Written by screenpop.
CREATE TABLE customer_picks (
    agent_id     text NOT NULL,
    caller_key   text NOT NULL,
    customer_id  text NOT NULL,
    picked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, caller_key)
);

-- call_log.answered_by is the answering agent (when an agent has the extension);
-- answered_extension is the extension itself.
ALTER TABLE call_log ADD COLUMN answered_extension text;
CREATE INDEX call_log_customer ON call_log (customer_id);
