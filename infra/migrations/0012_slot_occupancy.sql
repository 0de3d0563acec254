-- A slot's observed occupancy (`SlotOccupancyObserved`), next to its service state: both are
-- the slot calendar's own events, written by the slots projection.
ALTER TABLE rm_slot_service ALTER COLUMN out_of_service SET DEFAULT false;
ALTER TABLE rm_slot_service ADD COLUMN occupied boolean NOT NULL DEFAULT false;
ALTER TABLE rm_slot_service ADD COLUMN observed_at timestamptz;

CREATE OR REPLACE VIEW rm_slots_live AS
SELECT s.id, s.lot_id, s.label, s.slot_type, s.created_at,
       COALESCE(ss.out_of_service, false) AS out_of_service,
       COALESCE(ss.occupied, false) AS occupied,
       ss.observed_at
  FROM rm_slots s
  LEFT JOIN rm_slot_service ss ON ss.slot_id = s.id;
