-- screenpop schema, version 1: customers and their numbers, agents, the call log, and the
-- NOTIFY triggers that keep the daemon's in-memory index fresh.
-- Applied by `screenpop migrate --database-url URL` in one transaction; never edit an applied
-- migration, add the next file instead.

CREATE TABLE customers (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    company         text,
    account_number  text,
    crm_url         text,
    tags            text[] NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A customer's phone numbers: `raw` as entered; `e164` is filled by screenpop (import, or the
-- daemon when it loads the row) and is NULL for short codes and invalid numbers, which match
-- on their digits only.
CREATE TABLE customer_numbers (
    id           bigserial PRIMARY KEY,
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    raw          text NOT NULL,
    kind         text NOT NULL DEFAULT 'main' CHECK (kind IN ('main', 'work', 'mobile')),
    e164         text
);
CREATE INDEX customer_numbers_customer ON customer_numbers (customer_id);
CREATE INDEX customer_numbers_e164 ON customer_numbers (e164);

-- Agents: tokens are stored as SHA-256 hex only.
CREATE TABLE agents (
    id            text PRIMARY KEY,
    display_name  text NOT NULL,
    token_sha256  text NOT NULL CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    extensions    text[] NOT NULL DEFAULT '{}',
    roles         text[] NOT NULL DEFAULT '{}'
);

-- One row per call, written asynchronously and in batches by the daemon.
CREATE TABLE call_log (
    call_id             text PRIMARY KEY,
    caller_number       text,
    withheld            boolean NOT NULL DEFAULT false,
    customer_id         text,            -- no foreign key: the customer may be deleted later
    ringing_extensions  text[] NOT NULL DEFAULT '{}',
    answered_by         text,
    started_at          timestamptz NOT NULL,
    answered_at         timestamptz,
    ended_at            timestamptz,
    outcome             text
);
CREATE INDEX call_log_started ON call_log (started_at);

-- Change notifications. Payload: the customer id (or agent id) that changed; '*' means
-- "reload everything". A bulk load sets `screenpop.bulk = 'on'` for its transaction, which
-- silences the per-row notifications, and sends one '*' at the end.
CREATE FUNCTION screenpop_notify_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('screenpop.bulk', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('screenpop_customers', OLD.id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('screenpop_customers', NEW.id);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION screenpop_notify_number() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('screenpop.bulk', true) = 'on' THEN
        RETURN NULL;
    END IF;
    -- A number moved to another customer changes both.
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('screenpop_customers', OLD.customer_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('screenpop_customers', NEW.customer_id);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION screenpop_notify_reload() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '*');
    RETURN NULL;
END $$;

CREATE FUNCTION screenpop_notify_agent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('screenpop_agents', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END $$;

CREATE TRIGGER customers_notify AFTER INSERT OR UPDATE OR DELETE ON customers
    FOR EACH ROW EXECUTE FUNCTION screenpop_notify_customer();
CREATE TRIGGER customers_truncate AFTER TRUNCATE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION screenpop_notify_reload('screenpop_customers');
CREATE TRIGGER customer_numbers_insert_delete AFTER INSERT OR DELETE ON customer_numbers
    FOR EACH ROW EXECUTE FUNCTION screenpop_notify_number();
-- Filling in e164 is screenpop's own write: it does not notify (no loop).
CREATE TRIGGER customer_numbers_update AFTER UPDATE ON customer_numbers
    FOR EACH ROW
    WHEN (OLD.raw IS DISTINCT FROM NEW.raw OR OLD.customer_id IS DISTINCT FROM NEW.customer_id
          OR OLD.kind IS DISTINCT FROM NEW.kind)
    EXECUTE FUNCTION screenpop_notify_number();
CREATE TRIGGER customer_numbers_truncate AFTER TRUNCATE ON customer_numbers
    FOR EACH STATEMENT EXECUTE FUNCTION screenpop_notify_reload('screenpop_customers');
CREATE TRIGGER agents_notify AFTER INSERT OR UPDATE OR DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION screenpop_notify_agent();
CREATE TRIGGER agents_truncate AFTER TRUNCATE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION screenpop_notify_reload('screenpop_agents');
