-- Documents (SPEC §10): what the PDF invoices and receipts print (control/documents).

-- The issuer: printed on every document with the company's name. The address is free text, one line per
-- printed line; the logo is one of document_images.
ALTER TABLE company ADD COLUMN address text NOT NULL DEFAULT '';
ALTER TABLE company ADD COLUMN tax_number text NOT NULL DEFAULT '';
ALTER TABLE company ADD COLUMN email text NOT NULL DEFAULT '';
ALTER TABLE company ADD COLUMN logo_sha256 text;

-- Images by content: a document names the logo it was issued with, so a new logo changes no old document.
CREATE TABLE document_images (
    sha256       text        PRIMARY KEY,
    content_type text        NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg')),
    data         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE company ADD CONSTRAINT company_logo_fkey FOREIGN KEY (logo_sha256) REFERENCES document_images (sha256);

-- What a document prints of the issuer and of the account, copied when it is issued: a document printed again
-- a year later says what it said then. NULL (documents from before this migration): printed from the company
-- and the account as they are now.
ALTER TABLE invoices ADD COLUMN issuer jsonb;
ALTER TABLE invoices ADD COLUMN bill_to jsonb;
ALTER TABLE receipts ADD COLUMN issuer jsonb;
ALTER TABLE receipts ADD COLUMN bill_to jsonb;
