package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// freshDSN names a database that does not exist yet on the run's engine.
func freshDSN(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "fresh_" + hex.EncodeToString(b[:])
	dsn, err := store.WithDatabase(chtest.Base(t), name)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := store.Open(ctx, dsn); err == nil {
			_ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
			c.Close()
		}
	})
	return dsn
}

// migrateConcurrently migrates dsn from three connections at once, as three services
// starting together would.
func migrateConcurrently(t *testing.T, dsn string) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := store.Open(ctx, dsn)
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			errs[i] = store.Migrate(ctx, c)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// Several services start at once on an empty database: every one migrates, none fails.
func TestMigrateConcurrentlyFromEmpty(t *testing.T) {
	migrateConcurrently(t, freshDSN(t))
}

// A service that died half-way through a migration (after 0030's ADD COLUMN, before the
// migration was recorded) must not wedge every later start: current servers answer a
// repeated ADD COLUMN with DUPLICATE_COLUMN (15), 18.16 with 44.
func TestMigrateAfterCrashMidMigration(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	require.NoError(t, conn.Exec(ctx, "ALTER TABLE schema_migrations DELETE WHERE version >= 30"))
	require.Eventually(t, func() bool {
		var n uint64
		return conn.QueryRow(ctx, "SELECT count() FROM schema_migrations WHERE version >= 30").Scan(&n) == nil && n == 0
	}, 30*time.Second, 50*time.Millisecond)
	require.NoError(t, store.Migrate(ctx, conn))
	// And once more, as the next service to start would.
	require.NoError(t, store.Migrate(ctx, conn))
}

// Every value enters SQL through Quote: whatever the string, the engine reads back the
// same bytes.
func TestQuoteRoundTrips(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	for _, s := range []string{"", "plain", "it's", `back\slash`, "new\nline", "tab\tcr\r", "nul\x00byte",
		`'; DROP TABLE events; --`, `\'`, "quote at end '", "ünïcödé 🚀", `{"json":"va\"lue"}`} {
		var got string
		require.NoError(t, conn.QueryRow(ctx, "SELECT "+store.Quote(s)).Scan(&got), "%q", s)
		require.Equal(t, s, got)
	}
	var arr []string
	in := []string{"a", "b'c", `d\e`}
	require.NoError(t, conn.QueryRow(ctx, "SELECT "+store.QuoteList(in)).Scan(&arr))
	require.Equal(t, in, arr)
}

// Rows and batches carry every type flagwatch stores with the same values on both
// engines: the native driver's conversions are what the embedded codec must match.
func TestTypesRoundTrip(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	require.NoError(t, conn.Exec(ctx, `CREATE TABLE types_rt (
		id UInt32, u UUID, s String, i Int64, n UInt64, f Float64, b UInt8, d DateTime, a Array(String), fa Array(Float64)
	) ENGINE = MergeTree ORDER BY id`))
	id := uuid.MustParse("01234567-89ab-cdef-0123-456789abcdef")
	when := time.Date(2015, 3, 4, 5, 6, 7, 0, time.UTC)
	weird := "ctl\x01\x1f\"quote\\ \xff\xfe invalid utf-8"
	b, err := conn.PrepareBatch(ctx, "INSERT INTO types_rt (id, u, s, i, n, f, b, d, a, fa)")
	require.NoError(t, err)
	require.NoError(t, b.Append(uint32(1), id, weird, int64(math.MinInt64), uint64(math.MaxUint64), math.Inf(1), uint8(1), when, []string{"x", ""}, []float64{1.5, -2}))
	require.NoError(t, b.Append(uint32(2), id, "", int64(-5), uint64(0), math.NaN(), uint8(0), when, []string{}, []float64{}))
	require.NoError(t, b.Send())
	// Columnar blocks, as the event writer sends them.
	b, err = conn.PrepareBatch(ctx, "INSERT INTO types_rt (id, u, s, i, n, f, b, d, a, fa)")
	require.NoError(t, err)
	for blk := 0; blk < 2; blk++ {
		base := uint32(10 + 2*blk)
		require.NoError(t, b.Column(0).Append([]uint32{base, base + 1}))
		require.NoError(t, b.Column(1).Append([]uuid.UUID{id, id}))
		require.NoError(t, b.Column(2).Append([]string{"p", "q"}))
		require.NoError(t, b.Column(3).Append([]int64{7, 8}))
		require.NoError(t, b.Column(4).Append([]uint64{9, 10}))
		require.NoError(t, b.Column(5).Append([]float64{math.Inf(-1), 0.1}))
		require.NoError(t, b.Column(6).Append([]uint8{0, 1}))
		require.NoError(t, b.Column(7).Append([]int64{when.Unix(), when.Unix() + 1}))
		require.NoError(t, b.Column(8).Append([][]string{{"m"}, {"n", "o"}}))
		require.NoError(t, b.Column(9).Append([][]float64{{}, {3}}))
		require.NoError(t, b.Flush())
	}
	require.NoError(t, b.Send())

	rows, err := conn.Query(ctx, "SELECT id, u, s, i, n, f, b, d, a, fa FROM types_rt ORDER BY id")
	require.NoError(t, err)
	defer rows.Close()
	type row struct {
		id uint32
		u  uuid.UUID
		s  string
		i  int64
		n  uint64
		f  float64
		b  uint8
		d  time.Time
		a  []string
		fa []float64
	}
	var got []row
	for rows.Next() {
		var r row
		require.NoError(t, rows.Scan(&r.id, &r.u, &r.s, &r.i, &r.n, &r.f, &r.b, &r.d, &r.a, &r.fa))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.Len(t, got, 6)
	require.Equal(t, id, got[0].u)
	require.Equal(t, weird, got[0].s, "bytes stored unchanged")
	require.Equal(t, int64(math.MinInt64), got[0].i)
	require.Equal(t, uint64(math.MaxUint64), got[0].n)
	require.True(t, math.IsInf(got[0].f, 1))
	require.True(t, got[0].d.Equal(when), "%v", got[0].d)
	require.Equal(t, []string{"x", ""}, got[0].a)
	require.Equal(t, []float64{1.5, -2}, got[0].fa)
	require.True(t, math.IsNaN(got[1].f))
	require.Empty(t, got[1].a)
	require.Equal(t, []uint32{10, 11, 12, 13}, []uint32{got[2].id, got[3].id, got[4].id, got[5].id})
	require.True(t, math.IsInf(got[2].f, -1))
	require.True(t, got[3].d.Equal(when.Add(time.Second)))
	require.Equal(t, []string{"n", "o"}, got[5].a)

	var none uint64
	require.Error(t, conn.QueryRow(ctx, "SELECT n FROM types_rt WHERE id = 999").Scan(&none), "no row is an error")
}

// What a failure means is decided in one place, from the engine's own answers.
func TestClassifyEngineErrors(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	err := conn.Exec(ctx, "SELECT * FROM no_such_table")
	require.Error(t, err)
	require.Equal(t, store.Fatal, store.Classify(err), "%v", err)
	code, ok := store.ExceptionCode(err)
	require.True(t, ok)
	require.Equal(t, int32(60), code)

	// A value the type cannot hold (what a batch of bad rows gets back).
	err = conn.Exec(ctx, "SELECT toUInt8('not a number')")
	require.Error(t, err)
	require.Equal(t, store.BadData, store.Classify(err), "%v", err)

	err = conn.Exec(ctx, "SELECT * FROM (SELECT 1 AS k) ANY LEFT JOIN (SELECT 1 AS k) USING k SETTINGS joined_subquery_requires_alias = 1")
	if err != nil { // 18.16 has no such setting and needs no alias: either way, not retryable
		require.Equal(t, store.Fatal, store.Classify(err), "%v", err)
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want store.Class
	}{
		{&store.Exception{Code: 252, Message: "Too many partitions for single INSERT block (more than 100)."}, store.BadData},
		{&store.Exception{Code: 252, Message: "Too many parts (300). Merges are processing significantly slower than inserts"}, store.Transient},
		{&store.Exception{Code: 516, Message: "default: Authentication failed"}, store.Fatal},
		{&store.Exception{Code: 81, Message: "Database nope doesn't exist"}, store.Fatal},
		{&store.Exception{Code: 241, Message: "Memory limit exceeded"}, store.Transient},
		{&store.Exception{Code: 53, Message: "Type mismatch"}, store.BadData},
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "clickhous", IsNotFound: true}}, store.Fatal},
		{&net.OpError{Op: "dial", Err: &timeoutErr{}}, store.Transient},
		{context.DeadlineExceeded, store.Transient},
	} {
		require.Equal(t, c.want, store.Classify(c.err), "%v", c.err)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// Mistakes in the DSN fail at once with one line that says what to check, instead of
// being retried forever.
func TestOpenFailsFastOnPermanentMistakes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, c := range []struct{ dsn, want string }{
		{"clickhous://127.0.0.1:9000/db", "unknown scheme"},
		{"127.0.0.1:9000", "want clickhouse://"},
		{"chdb://", "names no directory"},
		{"chdb:///tmp/x?bad-setting=1", "not a setting name"},
	} {
		start := time.Now()
		_, err := store.Open(ctx, c.dsn)
		require.Error(t, err, c.dsn)
		require.Contains(t, err.Error(), c.want)
		require.Less(t, time.Since(start), 5*time.Second)
	}
}

// A server that refuses the password, or a port that speaks HTTP, is a permanent
// mistake; a port nobody listens on is waited for, but only as long as asked.
func TestOpenServerMistakes(t *testing.T) {
	chtest.ServerOnly(t, "credentials, ports and protocols are a server's")
	base := chtest.Base(t)
	u, err := url.Parse(base)
	require.NoError(t, err)

	wrong := *u
	wrong.User = url.UserPassword("default", "wrong-password")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = store.Open(ctx, wrong.String())
	require.Error(t, err)
	require.Contains(t, err.Error(), "refuses the credentials")
	require.NotContains(t, err.Error(), "wrong-password", "the password never appears")
	require.NoError(t, ctx.Err(), "failed before the deadline, not by it")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { // an HTTP server where the native port should be
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 1024)
				_, _ = c.Read(buf)
				_, _ = c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
				c.Close()
			}()
		}
	}()
	defer ln.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	_, err = store.Open(ctx2, "clickhouse://"+ln.Addr().String()+"/db")
	require.Error(t, err)
	require.NoError(t, ctx2.Err())

	free, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := free.Addr().String()
	free.Close()
	start := time.Now()
	_, err = store.Open(context.Background(), "clickhouse://"+addr+"/db", store.WithMaxWait(time.Second))
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "not reachable"), "%v", err)
	require.Less(t, time.Since(start), 15*time.Second)
}
