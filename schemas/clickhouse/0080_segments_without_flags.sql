-- Other flags' variants ($feature/<key>, which posthog-js puts on every event for every
-- active flag) are not segment properties (event.SegmentProps): with 20–50 active flags
-- they made every user's segment set distinct, so segment_sets held a set per user and
-- every exposure row a kilobyte of them. The column default follows the Go rule again
-- (TestSegmentsDefaultMatchesGo).
ALTER TABLE exposures MODIFY COLUMN segments String DEFAULT
concat('{', arrayStringConcat(arrayFilter(kv -> NOT has(['"$session_id"', '"$window_id"', '"$insert_id"', '"$pageview_id"', '"$device_id"', '"$anon_distinct_id"', '"distinct_id"', '"$user_id"', '"uuid"', '"token"', '"$time"', '"$timestamp"', '"$sent_at"', '"$feature_flag"', '"$feature_flag_response"', '"$feature_flag_payload"'], substring(kv, 1, position(kv, '":"'))) AND substring(kv, 1, 10) != '"$feature/', extractAll(properties, '"(?:[^"\\\\]|\\\\.){1,100}":"(?:[^"\\\\]|\\\\.){0,100}"')), ','), '}');
