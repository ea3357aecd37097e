package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
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

// readBody reads at most limit bytes of the request body.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("request body over %d bytes: %w", limit, errTooLarge)
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return body, nil
}

// wire is the payload as the request carries it, with how it says it is encoded.
type wire struct {
	data        []byte
	compression string // query or form "compression": gzip, gzip-js, base64, lz64, …
	gzipped     bool   // Content-Encoding: gzip applies to data
}

// unwrapRequest finds the payload in a request, from PostHog's conventions: ?data= (GET
// pixel, or POST with the payload in the query), a form body's data= field, or the
// body itself; then undoes its compression and encodings.
func unwrapRequest(r *http.Request, body []byte, limit int64) ([]byte, error) {
	w, err := locatePayload(r, body)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(w.data)) == 0 {
		return nil, errors.New("empty payload")
	}
	return decodePayload(w, limit)
}

func locatePayload(r *http.Request, body []byte) (wire, error) {
	q := r.URL.Query()
	w := wire{compression: strings.ToLower(q.Get("compression"))}
	if d := q.Get("data"); d != "" {
		w.data = []byte(restorePlus(d))
		return w, nil
	}
	enc, err := contentEncoding(r)
	if err != nil {
		return wire{}, err
	}
	if enc == "" && isForm(r, body) {
		return formPayload(body, w.compression)
	}
	w.data, w.gzipped = body, enc == "gzip"
	return w, nil
}

// contentEncoding returns "gzip" or "" (identity), or an error for anything else.
func contentEncoding(r *http.Request) (string, error) {
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
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
func isForm(r *http.Request, body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if looksJSON(trimmed) || bytes.HasPrefix(body, gzipMagic) {
		return false
	}
	if bytes.HasPrefix(trimmed, []byte("data=")) {
		return true
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
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
func decodePayload(w wire, limit int64) ([]byte, error) {
	switch w.compression {
	case "", "gzip", "gzip-js", "base64", "b64":
	case "lz64", "lz-string":
		return nil, fmt.Errorf("compression %q is not supported: configure the SDK for gzip-js or base64", w.compression)
	default:
		return nil, fmt.Errorf("unknown compression %q", w.compression)
	}
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
			if data, err = gunzip(data, limit); err != nil {
				return nil, err
			}
		case looksJSON(trimmed):
			return trimmed, nil
		default:
			var err error
			if data, err = decodeBase64(trimmed); err != nil {
				return nil, err
			}
		}
	}
	return nil, fmt.Errorf("payload is not JSON after %d layers of decoding", maxLayers)
}

// gunzip decompresses at most limit bytes, so a small gzip bomb cannot exhaust memory.
func gunzip(data []byte, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("invalid gzip data: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("invalid gzip data: %w", err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("decompressed payload over %d bytes: %w", limit, errTooLarge)
	}
	return out, nil
}

var base64Encodings = []*base64.Encoding{
	base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
}

func decodeBase64(data []byte) ([]byte, error) {
	s := strings.TrimRight(string(data), " \t\r\n")
	for _, enc := range base64Encodings {
		if out, err := enc.DecodeString(s); err == nil {
			return out, nil
		}
	}
	return nil, errors.New("payload is neither JSON, gzip nor base64")
}
