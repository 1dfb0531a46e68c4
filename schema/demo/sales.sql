-- Demo sales system (its own database): orders and their lines.
-- Created by `screenpop demo-db`; the "purchases" source of config/screenpop.example.toml reads it.
CREATE TABLE orders (
    id        text PRIMARY KEY,
    account   text NOT NULL,
    placed    date NOT NULL,
    currency  text NOT NULL
);
CREATE INDEX orders_account ON orders (account, placed DESC);
CREATE TABLE order_items (
    order_id  text NOT NULL REFERENCES orders (id),
    sku       text NOT NULL,
    name      text NOT NULL,
    qty       integer NOT NULL CHECK (qty > 0),
    price     numeric(10, 2) NOT NULL,
    PRIMARY KEY (order_id, sku)
);
