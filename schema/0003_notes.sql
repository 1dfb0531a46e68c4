-- 0003: what the agent wrote about a call after it (the agent page's notes box).
-- notes: free text (the page bounds it at 4,000 characters); disposition: one of the
-- configured `[page] dispositions`; noted_by: the agent id; noted_at: when it was saved.
-- Written by screenpop's call-log writer, after the call's own row, in the same transaction.
ALTER TABLE call_log
    ADD COLUMN notes text,
    ADD COLUMN disposition text,
    ADD COLUMN noted_by text,
    ADD COLUMN noted_at timestamptz;
CREATE INDEX call_log_disposition ON call_log (disposition) WHERE disposition IS NOT NULL;
