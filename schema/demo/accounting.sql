-- Demo accounting system (its own database): accounts and their invoices.
-- Created by `screenpop demo-db`; the "balance" source of config/screenpop.example.toml reads it.
CREATE TABLE accounts (
    account   text PRIMARY KEY,
    currency  text NOT NULL CHECK (currency ~ '^[A-Z]{3}$')
);
CREATE TABLE invoices (
    number    text PRIMARY KEY,
    account   text NOT NULL REFERENCES accounts (account),
    issued    date NOT NULL,
    due       date NOT NULL,
    amount    numeric(12, 2) NOT NULL,
    paid      boolean NOT NULL DEFAULT false
);
CREATE INDEX invoices_account ON invoices (account);
