-- agora-payments: one row per order that was charged (or declined), and one
-- per refund. No card number is ever stored: a card is its brand, last four
-- digits and expiry (enough to tell a repeat with another card from the
-- same request). A charge whose provider call timed out leaves no row.
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    user_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED')),
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    currency TEXT NOT NULL,
    refunded_cents BIGINT NOT NULL DEFAULT 0
        CHECK (refunded_cents >= 0 AND refunded_cents <= amount_cents),
    method_type TEXT NOT NULL CHECK (method_type IN ('card', 'wallet')),
    card_brand TEXT,
    card_last4 TEXT,
    card_exp TEXT,
    wallet_id TEXT,
    provider TEXT NOT NULL,
    provider_ref TEXT,
    failure_code TEXT,
    failure_message TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX payments_created ON payments (created_at, id);

-- A refund of part or all of a payment. idempotency_key is the caller's
-- Idempotency-Key header (NULL without one); response is the first answer,
-- returned again for a repeat with the same key.
CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    requested_cents BIGINT,
    idempotency_key TEXT,
    provider_ref TEXT,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (payment_id, idempotency_key)
);
CREATE INDEX refunds_payment ON refunds (payment_id, created_at);
