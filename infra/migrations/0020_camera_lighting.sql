-- Each camera's latest lighting score, as the vision service reported it (`CameraLightingObserved`,
-- docs/vision.md, "Lighting"): a lot's `ai_safety_score` is their mean. Part of the `lots`
-- read model; a removed camera's row goes with it.
CREATE TABLE rm_camera_lighting
(
    lot_id      uuid        NOT NULL,
    camera_id   uuid        NOT NULL,
    score       float8      NOT NULL,
    observed_at timestamptz NOT NULL,
    PRIMARY KEY (lot_id, camera_id)
);
