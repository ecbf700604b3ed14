-- Full-text search on PostgreSQL: a generated tsvector over name and
-- description ('simple' configuration: lower-cased words, no stemming, the
-- same matching as SQLite's FTS5 unicode61), with a GIN index.
ALTER TABLE products ADD COLUMN search tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', name || ' ' || description)) STORED;
CREATE INDEX products_search ON products USING GIN (search);
