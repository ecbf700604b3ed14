-- agora-analytics: a read model built only from the event stream (CQRS).
--
-- journal keeps every event consumed, as it arrived (the envelope's id,
-- type, subject, time and data); every a_* table is a projection of it,
-- written in the transaction that records the event in agora_inbox, and
-- POST /v1/admin/analytics/rebuild drops them and folds the journal again.
-- Every projection is order-independent (counts, first and last times,
-- the furthest status an order reached), so a rebuild ends identical
-- whatever order the events arrived in.
CREATE TABLE journal (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    subject TEXT,
    time TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX journal_time ON journal (time, id);

-- One row per order. status is the furthest reached (rank: PENDING 0,
-- CONFIRMED 1, SHIPPED 2, DELIVERED 3, CANCELLED 4); placed_at the time of
-- its earliest event (order.created).
CREATE TABLE a_orders (
    order_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    status_rank BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    from_cart BIGINT NOT NULL DEFAULT 0,
    placed_at TEXT NOT NULL
);
CREATE INDEX a_orders_user ON a_orders (user_id);

CREATE TABLE a_order_items (
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX a_order_items_product ON a_order_items (product_id);

-- Users who put something in a cart (cart.item_added), with the first time.
CREATE TABLE a_carts (
    user_id TEXT PRIMARY KEY,
    first_at TEXT NOT NULL,
    items_added BIGINT NOT NULL
);

-- Users known from user.registered.
CREATE TABLE a_users (
    user_id TEXT PRIMARY KEY,
    registered_at TEXT NOT NULL
);

-- A user was active on a day (UTC): registered, signed in, added to a cart,
-- placed an order or sent a chat message.
CREATE TABLE a_activity (
    day TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (day, user_id)
);

-- Chat rooms: the name of the highest version seen, deleted once deleted.
CREATE TABLE a_rooms (
    room_id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL DEFAULT -1,
    is_private BIGINT NOT NULL DEFAULT 0,
    deleted BIGINT NOT NULL DEFAULT 0,
    messages BIGINT NOT NULL DEFAULT 0,
    messages_deleted BIGINT NOT NULL DEFAULT 0,
    last_message_at TEXT
);

CREATE TABLE a_room_senders (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
