-- Deliveries without foreign keys, as on SQLite (its 0008). Why: PostgreSQL checks a
-- foreign key by locking the row it names FOR KEY SHARE. Every event's transaction
-- locked the same few handler rows that way, and a row share-locked by several
-- transactions at once gets a new multixact for each one that joins: the outbox's
-- statement, which inserts the event and its deliveries, took a third more time per
-- call with the keys (pg_stat_statements, saturated bench). The event's key locked the
-- row the same statement had just inserted, for nothing.
--
-- What the keys checked still holds. Deliveries are only inserted by the outbox, in one
-- statement with the event it names and the handlers it reads; events are never
-- deleted; and a handler is deleted with its deliveries under a lock that waits for
-- every transaction writing deliveries (see handlers::delete), so none that read it can
-- queue a delivery for it afterwards.
--
-- Every foreign key of the table, whatever its name.
DO $$
DECLARE
    k record;
BEGIN
    FOR k IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'deliveries'::regclass AND contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE deliveries DROP CONSTRAINT %I', k.conname);
    END LOOP;
END
$$;
