package store

import (
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// Exception is an error the embedded engine reported ("Code: 60. DB::Exception: …").
// Errors from a server are clickhouse-go's *clickhouse.Exception; ExceptionCode reads
// the code of either.
type Exception struct {
	Code    int32
	Name    string
	Message string
}

func (e *Exception) Error() string {
	return "code: " + strconv.Itoa(int(e.Code)) + ", message: " + e.Message
}

var exceptionRE = regexp.MustCompile(`(?s)Code: (\d+)\. (?:DB::Exception: )?(.*?)(?: \(([A-Z_]+)\))?(?: \(version [^)]*\))?\s*$`)

// parseException turns the embedded engine's error text into an *Exception when it
// carries a code.
func parseException(msg string) error {
	msg = strings.TrimSpace(msg)
	m := exceptionRE.FindStringSubmatch(msg)
	if m == nil {
		return errors.New(msg)
	}
	code, _ := strconv.Atoi(m[1])
	return &Exception{Code: int32(code), Name: m[3], Message: m[2]}
}

// ExceptionCode is the ClickHouse error code carried by err, from either engine.
func ExceptionCode(err error) (int32, bool) {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return ex.Code, true
	}
	var ee *Exception
	if errors.As(err, &ee) {
		return ee.Code, true
	}
	return 0, false
}

func exceptionMessage(err error) string {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return ex.Message
	}
	var ee *Exception
	if errors.As(err, &ee) {
		return ee.Message
	}
	return err.Error()
}

// Class is what a failed ClickHouse call means for the caller.
type Class int

const (
	// Transient errors may pass: the network, a server starting or overloaded, too many
	// parts, timeouts. Back off and retry.
	Transient Class = iota
	// BadData errors are permanent for the rows sent, not for the service: a value the
	// column cannot hold, a parse error, too many partitions in one block. Retrying the
	// same rows fails the same way; split the batch and set the offending rows aside.
	BadData
	// Fatal errors are permanent for the service: credentials, a missing database or
	// table, a wrong port or protocol, SQL the server refuses. Fail with a clear message.
	Fatal
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case BadData:
		return "bad data"
	default:
		return "fatal"
	}
}

// Codes from ClickHouse's ErrorCodes.cpp.
var (
	transientCodes = map[int32]bool{
		3: true, 23: true, 24: true, 32: true, // unexpected EOF, cannot read/write stream, read after EOF
		159: true, 160: true, 209: true, 210: true, // timeouts, too slow, socket timeout, network error
		202: true, 203: true, // too many simultaneous queries, no free connection
		225: true, 999: true, 1000: true, // ZooKeeper/Keeper, Poco
		236: true, 394: true, // aborted, query was cancelled
		241: true, 243: true, // memory limit exceeded, not enough space
		242: true, 285: true, 286: true, 319: true, // read-only replica, too few replicas, quorum, unknown insert status
		425: true, 439: true, 473: true, // system error, cannot schedule task, deadlock avoided
	}
	badDataCodes = map[int32]bool{
		6: true, 26: true, 27: true, 38: true, 41: true, 72: true, // cannot parse text/quoted string/input/date/datetime/number
		53: true, 70: true, 69: true, 321: true, // type mismatch, cannot convert, argument out of bound, out of range
		117: true, 131: true, // incorrect data, too large string size
	}
	authCodes = map[int32]bool{192: true, 193: true, 194: true, 497: true, 516: true}
)

// Classify says whether err may pass (Transient), is about the rows sent (BadData) or
// stops the service (Fatal). An exception the server raised for a reason not known to be
// passing is Fatal: the server answered, and retrying the same statement gets the same
// answer — the mistake "retry every error forever" is what this function exists to avoid.
func Classify(err error) Class {
	if err == nil {
		return Transient
	}
	if code, ok := ExceptionCode(err); ok {
		switch {
		case code == 252:
			// TOO_MANY_PARTS: merges behind (passes) — or too many partitions in one
			// insert block (max_partitions_per_insert_block), which the same rows
			// always hit.
			if strings.Contains(strings.ToLower(exceptionMessage(err)), "partitions") {
				return BadData
			}
			return Transient
		case transientCodes[code]:
			return Transient
		case badDataCodes[code]:
			return BadData
		}
		return Fatal
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Transient
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		// A name that does not resolve is a configuration mistake — unless the name is
		// just not registered yet (a container starting); Open gives it a short grace.
		if dns.IsNotFound {
			return Fatal
		}
		return Transient
	}
	msg := err.Error()
	if strings.Contains(msg, "unexpected packet") || strings.Contains(msg, "HTTP/1.") {
		return Fatal // the HTTP port, or something that is not ClickHouse's native protocol
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return Transient
	}
	if strings.Contains(msg, "connection refused") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "i/o timeout") ||
		strings.Contains(msg, "acquire conn timeout") {
		return Transient
	}
	return Fatal
}

// IsAuth reports whether err is ClickHouse refusing the credentials.
func IsAuth(err error) bool {
	code, ok := ExceptionCode(err)
	return ok && authCodes[code]
}
