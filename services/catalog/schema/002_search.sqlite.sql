-- Full-text search on SQLite: an FTS5 index over name and description, kept
-- in step with products by triggers (so no code path can forget it).
-- product_id is stored unindexed to join back; unicode61 folds case and
-- diacritics.
CREATE VIRTUAL TABLE products_fts USING fts5(
    product_id UNINDEXED, name, description, tokenize = 'unicode61 remove_diacritics 2');
CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
    INSERT INTO products_fts (product_id, name, description)
    VALUES (new.id, new.name, new.description);
END;
CREATE TRIGGER products_fts_update AFTER UPDATE OF name, description ON products BEGIN
    DELETE FROM products_fts WHERE product_id = old.id;
    INSERT INTO products_fts (product_id, name, description)
    VALUES (new.id, new.name, new.description);
END;
CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
    DELETE FROM products_fts WHERE product_id = old.id;
END;
