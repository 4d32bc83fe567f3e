-- The shortest destination a call may have after localization: a number reduced to a country code ("0" dialled
-- and localized to "49") is no number a carrier can complete, yet it would match a rate.
ALTER TABLE company
    ADD COLUMN min_destination_digits smallint NOT NULL DEFAULT 1 CHECK (min_destination_digits BETWEEN 1 AND 18);
