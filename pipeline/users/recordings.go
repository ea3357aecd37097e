package users

import (
	"strings"
)

// RecordingLink fills a recordings_url template in: {session_id} and {distinct_id}
// become the session's and the user's ids, percent-encoded so that any id — with a
// slash, a question mark, an ampersand or a space — stays one path segment or one query
// value. "" when there is no template.
func RecordingLink(template, sessionID, distinctID string) string {
	if template == "" {
		return ""
	}
	return strings.NewReplacer("{session_id}", escape(sessionID), "{distinct_id}", escape(distinctID)).Replace(template)
}

// escape percent-encodes every byte but RFC 3986's unreserved characters, which is
// right in a path and in a query alike (url.PathEscape keeps & and =, url.QueryEscape
// turns a space into +, which a path keeps as +).
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
