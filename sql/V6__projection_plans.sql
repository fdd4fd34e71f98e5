-- Projection functions run in long-lived projector sessions. After five calls PL/pgSQL may
-- switch a statement to a generic plan chosen when the read models were empty (no
-- statistics yet); for a large queue that plan rescans the table per row and one event took
-- seconds. Custom plans cost a few tenths of a millisecond to make and stay right.
ALTER FUNCTION refresh_waiting_queue(text, integer, timestamptz) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION project_waiting_room(waiting_room_events) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION project_stream(text, text, integer) SET plan_cache_mode = force_custom_plan;
