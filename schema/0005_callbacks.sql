-- 0005: missed calls become callbacks (`callbacks` in screenpop): one entry per caller while
-- open. data: the entry as the API shows it (number, customer or candidates, attempts, first
-- and last ring, extensions, missed call ids), written by screenpop on every missed call.
-- state and who holds it are written only by the agents' actions, as conditional updates, so
-- that of two agents claiming at once exactly one wins (on any node).
CREATE TABLE callbacks (
    id              text PRIMARY KEY,
    caller_key      text NOT NULL,
    data            jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'open'
                        CHECK (state IN ('open', 'claimed', 'done', 'reached')),
    claimed_by      text,
    claimed_at      timestamptz,
    closed_by       text,
    closed_at       timestamptz,
    closed_call_id  text,
    note            text,
    disposition     text,
    last_ring       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX callbacks_live ON callbacks (caller_key) WHERE state IN ('open', 'claimed');
CREATE INDEX callbacks_last_ring ON callbacks (last_ring);
