package breaker

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// Heartbeat is an http.Handler for a /heartbeat endpoint. It answers GET and
// HEAD with every breaker's Status keyed by its name, after a "status" field,
// as the seed did:
//
//	{"status":"ok","api.example.com":{"state":"closed","degraded":false,"consecutive_failures":0,"seconds_until_retry":null}}
//
// By default it always answers 200 with "status":"ok" and leaves judging the
// breakers to the reader. In Strict mode, for load balancers and readiness
// probes that read only the code, it answers 503 with "status":"degraded"
// while any breaker is degraded, half-open included: an upstream is not
// trusted again until a probe has succeeded.
//
// Names must be unique and not "status"; a repeated key is left out, so the
// body stays valid JSON with the first breaker of each name.
type Heartbeat struct {
	// Breakers are reported in this order.
	Breakers []CircuitBreaker
	// Sets have their breakers reported after those, sorted by name.
	Sets []*Set
	// Strict makes a degraded breaker turn the answer into a 503.
	Strict bool
}

// ServeHTTP writes the heartbeat.
func (h Heartbeat) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	statuses := make([]Status, 0, len(h.Breakers))
	for _, b := range h.Breakers {
		statuses = append(statuses, b.Status())
	}
	for _, s := range h.Sets {
		statuses = append(statuses, s.Statuses()...)
	}

	code, overall := http.StatusOK, "ok"
	if h.Strict && anyDegraded(statuses) {
		code, overall = http.StatusServiceUnavailable, "degraded"
	}
	var body bytes.Buffer
	body.WriteString(`{"status":`)
	writeJSON(&body, overall)
	seen := map[string]bool{"status": true}
	for _, st := range statuses {
		if seen[st.Name] {
			continue
		}
		seen[st.Name] = true
		body.WriteByte(',')
		writeJSON(&body, st.Name)
		body.WriteByte(':')
		writeJSON(&body, st)
	}
	body.WriteString("}\n")

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		w.Write(body.Bytes())
	}
}

func anyDegraded(statuses []Status) bool {
	for _, st := range statuses {
		if st.Degraded {
			return true
		}
	}
	return false
}

// writeJSON appends v's JSON. The values written here (strings, Status)
// cannot fail to marshal.
func writeJSON(buf *bytes.Buffer, v any) {
	b, _ := json.Marshal(v)
	buf.Write(b)
}
