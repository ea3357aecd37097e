package event

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// fastSeeds are messages at and around the fast path's edges.
var fastSeeds = []string{
	`{"uuid":"0190d7a2-1b2c-7def-8123-456789abcdef","event":"$feature_flag_called","distinct_id":42,"timestamp":"2026-11-20T10:00:00.250Z","properties":{"$feature_flag":"new-checkout","$feature_flag_response":true,"$geoip_country_code":"GB"}}`,
	`{"event":"purchase","timestamp":1763632800,"properties":{"$distinct_id":"u1","revenue":12.5,"$feature/b":"test","$feature/a":false}}`,
	`{"event":"$pageview","distinct_id":"u1"}`,
	`{"event":"$pageview","properties":{"distinct_id":"u2"}}`,
	`{"event":"$pageview","distinct_id":"u1","properties":{"$feature/x":"a","nested":{"$feature/y":"b"},"s":"\"$feature/z\""}}`,
	`{"event":"$pageview","distinct_id":"u1","properties":{"$feature/x":"a","$feature/x":"b"}}`,
	`{"event":"$pageview","distinct_id":"u1","properties":{"$Feature/x":"a","$feature/":"b","$feature/n":1.5e3,"$feature/o":{}}}`,
	`{"event":"$pageview","Distinct_ID":"u1"}`,
	`{"event":"$pageview","distinct_id":"u1","event":"other"}`,
	`{"event":"$pageview","distinct_id":"u\u00e9","properties":{"k\u00e9":"v\u00e9","é":"ü"}}`,
	`{"event":"$pageview","distinct_id":"u1","properties":{"a":[1,-0,2.5e-3,true,false,null,{"b":[]}]}}`,
	`{"event":"$pageview","distinct_id":"u1","properties":{"DISTINCT_ID":"x"}}`,
	`{"event":"$pageview","distinct_id":"","properties":{"distinct_id":"","$distinct_id":7}}`,
	`{"event":"$feature_flag_called","distinct_id":"u","properties":{"$feature_flag":"f"}}`,
	`{"event":"$feature_flag_called","distinct_id":"u","properties":{"$feature_flag":"f","$feature_flag_response":"v","$feature/f":"w","$feature/e":"x"}}`,
	`{"event":"$feature_flag_called","distinct_id":"u","properties":{"$feature_flag_response":"v"}}`,
	`{"event":"e","distinct_id":"u","timestamp":null}`,
	`{"event":"e","distinct_id":"u","timestamp":"2026-11-20 10:00:00"}`,
	`{"event":"e","distinct_id":"u","timestamp":"yesterday"}`,
	`{"event":"e","distinct_id":"u","timestamp":1.7636328e12}`,
	`{"event":"e","distinct_id":"u","timestamp":-5}`,
	`{"event":"e","distinct_id":"u","uuid":"not-a-uuid"}`,
	`{"event":"e","distinct_id":"u","uuid":""}`,
	`{"event":"e","distinct_id":"u","offset":500}`,
	`{"event":"e","distinct_id":"u","now":"2026-11-20T10:00:00Z","timestamp":"2026-11-20T10:00:00Z","sent_at":"2026-11-20T10:00:01Z"}`,
	`{"event":"e","distinct_id":"u","properties":null}`,
	`{"event":"e","distinct_id":"u","properties":"x"}`,
	`{"event":"e","distinct_id":"u","properties":{}} `,
	` {"event":"e","distinct_id":"u"}x`,
	`{"event":"e","distinct_id":"u","properties":{"a":"\ud800","b":"\u00E9\/"}}`,
	`{"event":"e","distinct_id":"u","properties":{"a":01}}`,
	`{"event":"e","distinct_id":{"a":1}}`,
	`{"event":"e","distinct_id":true,"properties":{"$distinct_id":"v"}}`,
	"{\"event\":\"e\",\"distinct_id\":\"u\",\"properties\":{\"a\":\"\xff\"}}",
	"{\"event\":\"e\",\"distinct_id\":\"u\",\"properties\":{\"a\":\"\x01\"}}",
	`{"event":"e","distinct_id":"u","name":"n"}`,
	`{"event":"e","distinct_id":"u","DATA":"{}"}`,
	`{"event":5,"distinct_id":"u"}`,
	`{"event":"e","distinct_id":"u","uuid":5}`,
	`{}`,
	`[{"event":"a","distinct_id":1},{"event":"b","distinct_id":"2","uuid":"0190d7a2-1b2c-7def-8123-456789abcdef"}]`,
}

// The fast path must give exactly the general path's result whenever it accepts a
// message, and must never accept one the general path rejects.
func checkFastAgrees(t *testing.T, msg []byte) {
	t.Helper()
	for _, rt := range []time.Time{recTime, {}} {
		ev, ok := fastPostHog(msg, rt)
		if !ok {
			continue
		}
		want, err := appendObjectGeneral(nil, msg, rt)
		require.Nil(t, err, "fast path accepted %q, general path rejects it", msg)
		require.Equal(t, want, []Event{ev}, "%q", msg)
	}
}

func TestFastPathAgrees(t *testing.T) {
	accepted := 0
	for _, s := range fastSeeds {
		checkFastAgrees(t, []byte(s))
		if _, ok := fastPostHog([]byte(s), recTime); ok {
			accepted++
		}
	}
	require.Greater(t, accepted, 10, "the fast path takes the common shapes")
	cfg := synth.Config{Seed: 3, Users: 300, Start: recTime, Days: 7, FeatureProps: true,
		Flags: []synth.Flag{{Key: "a"}, {Key: "b", Variants: []string{"x", "y", "z"}}}}
	n := 0
	require.NoError(t, cfg.Each(func(r synth.Record) error {
		_, ok := fastPostHog(r.Value, r.Time)
		require.True(t, ok, "synthetic PostHog events take the fast path: %s", r.Value)
		checkFastAgrees(t, r.Value)
		n++
		return nil
	}))
	require.Greater(t, n, 1000)
}

func FuzzFastPathAgrees(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		checkFastAgrees(t, msg)
		// Decode as a whole must still be total and well-formed (FuzzDecode's property).
		evs, err := Decode(msg, recTime)
		if err == nil {
			for _, ev := range evs {
				require.NotEmpty(t, ev.Name)
				require.NotEmpty(t, ev.DistinctID)
			}
		}
	})
}

// BenchmarkDecodePostHog decodes synthetic PostHog events (~460 bytes, nested
// properties): the per-event cost of ingest's decode step.
func BenchmarkDecodePostHog(b *testing.B) {
	var msgs [][]byte
	var size int
	cfg := synth.Config{Seed: 1, Users: 2000, Start: recTime, Days: 14,
		Flags: []synth.Flag{{Key: "new-checkout"}, {Key: "fast-search"}, {Key: "new-onboarding"}}}
	_ = cfg.Each(func(r synth.Record) error {
		msgs = append(msgs, r.Value)
		size += len(r.Value)
		return nil
	})
	b.SetBytes(int64(size / len(msgs)))
	b.ReportAllocs()
	b.Run("fast", func(b *testing.B) {
		var dst []Event
		for i := 0; b.Loop(); i++ {
			var err error
			if dst, err = AppendDecode(dst[:0], msgs[i%len(msgs)], recTime); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("general", func(b *testing.B) {
		var dst []Event
		for i := 0; b.Loop(); i++ {
			var err *Error
			if dst, err = appendObjectGeneral(dst[:0], msgs[i%len(msgs)], recTime); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Capture's messages (the client's times as sent, capture's now, the token) take the
// fast path, and it places them as the general path does.
func TestCaptureMessagesTakeTheFastPath(t *testing.T) {
	for _, msg := range []string{
		`{"uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a51","event":"$feature_flag_called","distinct_id":"user-1","timestamp":"2026-11-20T10:58:58.000Z","sent_at":"2026-11-20T10:59:00.000Z","now":"2026-11-20T12:00:00.000Z","properties":{"$feature_flag":"f","$feature_flag_response":"test","$lib":"posthog-node"},"token":"phc_test"}`,
		`{"uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a52","event":"$pageview","distinct_id":"u","offset":1500,"now":"2026-11-20T12:00:00.000Z","properties":{"$ignore_sent_at":true},"$set":{"plan":"pro"},"token":"k"}`,
		`{"uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a53","event":"$pageview","distinct_id":"u","timestamp":1763632800000,"sent_at":"2026-11-20T10:00:05.000Z","now":"2026-11-20T12:00:00.000Z","properties":{}}`,
	} {
		_, ok := fastPostHog([]byte(msg), recTime)
		require.True(t, ok, msg)
		checkFastAgrees(t, []byte(msg))
	}
}
