-- The product catalogue that the smoke checks look up.
CREATE TABLE product (
    sku              TEXT PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9-]{0,63}$'),
    name             TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    currency         CHAR(3) NOT NULL DEFAULT 'USD',
    active           BOOLEAN NOT NULL DEFAULT TRUE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
