-- The identity map fed by the HL7 v2 ADT feed (docs/hl7-adt.md). It keeps no
-- names, birth dates or addresses. Identifiers (PID-3, PV1-19) and phone
-- numbers (PID-13) are looked up by keyed tokens; the identifiers needed to
-- search the KIS are kept sealed with the operator's key.
CREATE TABLE adt_patients (
    patient_id          TEXT    NOT NULL PRIMARY KEY,
    sealed_identifiers  BLOB   NOT NULL,
    merged_into         TEXT,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);

CREATE TABLE adt_identifiers (
    token               TEXT    NOT NULL PRIMARY KEY,
    patient_id          TEXT    NOT NULL
);
CREATE INDEX adt_identifiers_by_patient ON adt_identifiers (patient_id);

CREATE TABLE adt_phones (
    token               TEXT    NOT NULL,
    patient_id          TEXT    NOT NULL,
    PRIMARY KEY (token, patient_id)
);
CREATE INDEX adt_phones_by_patient ON adt_phones (patient_id);

-- Encounters (cases) with their state as FHIR Encounter.status.
CREATE TABLE adt_encounters (
    token               TEXT    NOT NULL PRIMARY KEY,
    patient_id          TEXT    NOT NULL,
    sealed_identifier   BLOB   NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN ('in-progress', 'arrived', 'finished', 'cancelled')),
    updated_at          BIGINT  NOT NULL
);
CREATE INDEX adt_encounters_by_patient ON adt_encounters (patient_id, state);

-- ADT messages applied, by a token of sender and control id: a redelivery
-- is answered AA again and applies nothing.
CREATE TABLE adt_messages (
    message_token       TEXT    NOT NULL PRIMARY KEY,
    event               TEXT    NOT NULL,
    created_at          BIGINT  NOT NULL
);

-- Quarantine review: the candidate patient (identity map id) of a phone-only
-- match, the references an operator resolved it to, who and when, and when
-- it was released into the pipeline again.
ALTER TABLE quarantine ADD COLUMN candidate TEXT;
ALTER TABLE quarantine ADD COLUMN resolved_patient TEXT;
ALTER TABLE quarantine ADD COLUMN resolved_encounter TEXT;
ALTER TABLE quarantine ADD COLUMN resolved_by TEXT;
ALTER TABLE quarantine ADD COLUMN resolved_at BIGINT;
ALTER TABLE quarantine ADD COLUMN released_at BIGINT;
