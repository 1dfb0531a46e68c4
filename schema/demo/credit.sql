-- Demo credit system (its own database): credit terms per account.
-- Created by `screenpop demo-db`; the "credit" source of config/screenpop.example.toml reads it.
CREATE TABLE credit_terms (
    account       text PRIMARY KEY,
    credit_limit  numeric(12, 2) NOT NULL,
    currency      text NOT NULL,
    terms         text NOT NULL,
    rating        text NOT NULL CHECK (rating IN ('A', 'B', 'C', 'D')),
    hold          boolean NOT NULL DEFAULT false
);
