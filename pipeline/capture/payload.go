package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// errTooLarge marks a payload over the size limit, before or after decompression.
var errTooLarge = errors.New("payload too large")

var gzipMagic = []byte{0x1f, 0x8b}

// wire is the payload as the request carries it, with how it says it is encoded.
type wire struct {
	data        []byte
	compression string // query or form "compression": gzip, gzip-js, base64, lz64, …
	gzipped     bool   // Content-Encoding: gzip applies to data
}

// readPayload finds the payload in a request, from PostHog's conventions: ?data= (GET
// pixel, or POST with the payload in the query), a form body's data= field, or the
// body itself; then undoes its compression and encodings. Every buffer it allocates is
// reserved from res first, and nothing is decompressed before the request is known to
// fit. received is the bytes the request carried.
func readPayload(w http.ResponseWriter, r *http.Request, limit int64, res *reservation) (payload []byte, received int, err error) {
	q := r.URL.Query()
	if err := checkRequest(q, r.Header); err != nil {
		return nil, 0, err
	}
	var body []byte
	if q.Get("data") == "" {
		if body, err = readBody(w, r, limit, res); err != nil {
			return nil, len(body), err
		}
	}
	return requestPayload(q, r.Header, body, limit, res)
}

// checkRequest refuses, before the body is read, the encodings capture cannot undo.
func checkRequest(q url.Values, hdr http.Header) error {
	if err := checkCompression(strings.ToLower(q.Get("compression"))); err != nil {
		return err
	}
	if q.Get("data") != "" {
		return nil
	}
	_, err := contentEncoding(hdr)
	return err
}

// requestPayload is the JSON payload of a request whose query is q, headers hdr and body
// body (already read, and reserved from res): ?data=, a form's data= field, or the body,
// with its compression and encodings undone. received is the bytes the request carried.
func requestPayload(q url.Values, hdr http.Header, body []byte, limit int64, res *reservation) (payload []byte, received int, err error) {
	compression := strings.ToLower(q.Get("compression"))
	if err := checkCompression(compression); err != nil {
		return nil, 0, err
	}
	var in wire
	if d := q.Get("data"); d != "" {
		// Already in memory (net/http bounds the request line), but copied once more.
		if err := res.grow(2 * int64(len(d))); err != nil {
			return nil, len(d), err
		}
		in = wire{data: []byte(restorePlus(d)), compression: compression}
		received = len(d)
	} else {
		enc, err := contentEncoding(hdr)
		if err != nil {
			return nil, 0, err
		}
		received = len(body)
		if enc == "" && isForm(hdr, body) {
			// url.ParseQuery copies the body, and the data field once more.
			if err := res.grow(2 * int64(len(body))); err != nil {
				return nil, received, err
			}
			if in, err = formPayload(body, compression); err != nil {
				return nil, received, err
			}
		} else {
			in = wire{data: body, gzipped: enc == "gzip", compression: compression}
		}
	}
	if len(bytes.TrimSpace(in.data)) == 0 {
		return nil, received, errors.New("empty payload")
	}
	payload, err = decodePayload(in, limit, res)
	return payload, received, err
}

// readBody reads at most limit bytes of the request body into a buffer reserved from
// res: the whole Content-Length up front when the client sent one.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, res *reservation) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, fmt.Errorf("request body of %d bytes over %d: %w", r.ContentLength, limit, errTooLarge)
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, limit), limit, max(r.ContentLength, 0), res, true)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, errTooLarge) {
			return nil, fmt.Errorf("request body over %d bytes: %w", limit, errTooLarge)
		}
		if errors.Is(err, errBusy) || errors.Is(err, errOverBudget) {
			return nil, err
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return body, nil
}

// readAll reads r to its end, at most limit bytes (more is errTooLarge), into a buffer
// it reserves from res before allocating: hint bytes first, doubling after. With
// payload, the hint is also the payload's expected size, and the parse is reserved
// with the buffer.
func readAll(r io.Reader, limit, hint int64, res *reservation, payload bool) ([]byte, error) {
	size := min(max(hint+1, 512), limit+1) // +1: a read that fills it is not at EOF yet
	var err error
	if payload && hint > 0 {
		err = res.growForParse(int(hint), size)
	} else {
		err = res.grow(size)
	}
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 0, size)
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) {
			grown := min(2*int64(cap(buf)), limit+1)
			if err := res.grow(grown - int64(cap(buf))); err != nil {
				return nil, err
			}
			buf = append(make([]byte, 0, grown), buf...)
		}
	}
}

// checkCompression accepts the compression names PostHog's SDKs send.
func checkCompression(c string) error {
	switch c {
	case "", "gzip", "gzip-js", "base64", "b64":
		return nil
	case "lz64", "lz-string":
		return fmt.Errorf("compression %q is not supported: configure the SDK for gzip-js or base64", c)
	default:
		return fmt.Errorf("unknown compression %q", c)
	}
}

// contentEncoding returns "gzip" or "" (identity), or an error for anything else.
func contentEncoding(hdr http.Header) (string, error) {
	switch enc := strings.ToLower(strings.TrimSpace(hdr.Get("Content-Encoding"))); enc {
	case "", "identity":
		return "", nil
	case "gzip", "x-gzip":
		return "gzip", nil
	default:
		return "", fmt.Errorf("unsupported Content-Encoding %q (use gzip)", enc)
	}
}

// isForm reports whether body is a urlencoded form: by its content type, unless the body
// plainly is JSON or gzip (some clients label everything a form), or by a leading data=.
func isForm(hdr http.Header, body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if looksJSON(trimmed) || bytes.HasPrefix(body, gzipMagic) {
		return false
	}
	if bytes.HasPrefix(trimmed, []byte("data=")) {
		return true
	}
	mt, _, _ := mime.ParseMediaType(hdr.Get("Content-Type"))
	return mt == "application/x-www-form-urlencoded"
}

func formPayload(body []byte, compression string) (wire, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return wire{}, fmt.Errorf("form body: %w", err)
	}
	data := form.Get("data")
	if data == "" {
		return wire{}, errors.New("form body has no data field")
	}
	if compression == "" {
		compression = strings.ToLower(form.Get("compression"))
		if err := checkCompression(compression); err != nil {
			return wire{}, err
		}
	}
	return wire{data: []byte(restorePlus(data)), compression: compression}, nil
}

// restorePlus undoes a form decoder's '+' → ' ' on base64 that the client did not
// percent-encode; JSON, where a space is a space, is left alone.
func restorePlus(s string) string {
	if looksJSON([]byte(strings.TrimLeft(s, " \t\r\n"))) {
		return s
	}
	return strings.ReplaceAll(s, " ", "+")
}

func looksJSON(b []byte) bool {
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

// maxLayers bounds how many encodings (gzip, base64) are peeled off a payload; legacy
// clients nest at most base64(gzip(json)) inside a base64 form field.
const maxLayers = 4

// decodePayload peels gzip and base64 layers until JSON remains.
func decodePayload(w wire, limit int64, res *reservation) ([]byte, error) {
	data := w.data
	forceGzip := w.gzipped || w.compression == "gzip" || w.compression == "gzip-js"
	for range maxLayers {
		if int64(len(data)) > limit {
			return nil, fmt.Errorf("decoded payload over %d bytes: %w", limit, errTooLarge)
		}
		trimmed := bytes.TrimLeft(data, " \t\r\n")
		switch {
		case forceGzip || bytes.HasPrefix(data, gzipMagic):
			forceGzip = false
			var err error
			if data, err = gunzip(data, limit, res); err != nil {
				return nil, err
			}
		case looksJSON(trimmed):
			return trimmed, nil
		default:
			var err error
			if data, err = decodeBase64(trimmed, res); err != nil {
				return nil, err
			}
		}
	}
	return nil, fmt.Errorf("payload is not JSON after %d layers of decoding", maxLayers)
}

// gunzip decompresses at most limit bytes. The gzip trailer declares the size of the
// last member (ISIZE, mod 2³²): a payload that declares more than limit is refused, and
// the declared size reserved, before a byte is inflated; a trailer that lies only costs
// the reservation growing as the real bytes come, up to limit.
func gunzip(data []byte, limit int64, res *reservation) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("invalid gzip data: %w", err)
	}
	var declared int64
	if len(data) >= 18 { // header 10 + trailer 8
		declared = int64(binary.LittleEndian.Uint32(data[len(data)-4:]))
	}
	if declared > limit {
		return nil, fmt.Errorf("gzip payload declares %d bytes decompressed, over %d: %w", declared, limit, errTooLarge)
	}
	out, err := readAll(zr, limit, declared, res, true)
	switch {
	case errors.Is(err, errTooLarge):
		return nil, fmt.Errorf("decompressed payload over %d bytes: %w", limit, errTooLarge)
	case errors.Is(err, errBusy), errors.Is(err, errOverBudget):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("invalid gzip data: %w", err)
	}
	return out, nil
}

var base64Encodings = []*base64.Encoding{
	base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
}

// decodeBase64 decodes data in whichever base64 alphabet and padding it uses, into one
// buffer reserved first.
func decodeBase64(data []byte, res *reservation) ([]byte, error) {
	s := bytes.TrimRight(data, " \t\r\n")
	n := base64.RawStdEncoding.DecodedLen(len(s)) // the largest of the four
	if err := res.growForParse(n, int64(n)); err != nil {
		return nil, err
	}
	out := make([]byte, n)
	for _, enc := range base64Encodings {
		if m, err := enc.Decode(out, s); err == nil {
			return out[:m], nil
		}
	}
	return nil, errors.New("payload is neither JSON, gzip nor base64")
}
