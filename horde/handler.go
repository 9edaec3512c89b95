package horde

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/hordekit/httpretry/breaker"
)

// NewHandler returns the HTTP API of the AI Horde proxy, served from c:
//
//	GET /api/heartbeat                  the seed's heartbeat, with c's breaker
//	GET /api/v2/status/models           ?type=image|text &model_state= &min_count=
//	GET /api/v2/stats/img/models        ?model_state=
//	GET /api/v2/stats/text/models       ?model_state=
//	GET /api/v2/workers                 ?type=image|text
//
// The data endpoints mirror the API's own paths and answer with the API's
// JSON as it was received. Each carries an Age header (seconds since the
// copy was fetched); a copy served because the API could not be read also
// carries X-Horde-Stale: true. With no copy to serve they answer 502 with a
// JSON body {"error": "..."} (and Retry-After while the breaker is open), an
// invalid query 400. Other query parameters are ignored.
func NewHandler(c *Client) http.Handler {
	h := handler{c: c}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/heartbeat", h.heartbeat)
	mux.HandleFunc("GET /api/v2/status/models", h.status)
	mux.HandleFunc("GET /api/v2/stats/img/models", h.stats(Image))
	mux.HandleFunc("GET /api/v2/stats/text/models", h.stats(Text))
	mux.HandleFunc("GET /api/v2/workers", h.workers)
	return mux
}

type handler struct{ c *Client }

// heartbeatBody is the seed's /api/heartbeat in its key order. The seed's
// dict has no "state" key, so breaker.Status is not marshalled as it is.
type heartbeatBody struct {
	Status  string          `json:"status"`
	AIHorde heartbeatStatus `json:"ai_horde"`
}

type heartbeatStatus struct {
	Degraded            bool     `json:"degraded"`
	ConsecutiveFailures int      `json:"consecutive_failures"`
	SecondsUntilRetry   *seconds `json:"seconds_until_retry"`
}

// seconds marshals like a Python float, always with a decimal point (120.0,
// not 120), so the body matches the seed's byte for byte.
type seconds float64

// MarshalJSON writes s with at least one decimal.
func (s seconds) MarshalJSON() ([]byte, error) {
	b := strconv.AppendFloat(nil, float64(s), 'f', -1, 64)
	if math.Trunc(float64(s)) == float64(s) {
		b = append(b, ".0"...)
	}
	return b, nil
}

// heartbeat always answers 200 "ok", as the seed did: the service is up
// even while the API is not, and the breaker's status says how the API is.
// seconds_until_retry is null when closed, the remaining cooldown when open,
// and 0.0 when half-open (the seed said null there too, which read as
// healthy).
func (h handler) heartbeat(w http.ResponseWriter, _ *http.Request) {
	st := h.c.breaker().Status()
	body := heartbeatBody{Status: "ok", AIHorde: heartbeatStatus{
		Degraded:            st.Degraded,
		ConsecutiveFailures: st.ConsecutiveFailures,
	}}
	if st.SecondsUntilRetry != nil {
		s := seconds(*st.SecondsUntilRetry)
		body.AIHorde.SecondsUntilRetry = &s
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, body)
}

func (h handler) status(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sq := StatusQuery{Type: ModelType(q.Get("type")), State: ModelState(q.Get("model_state"))}
	if s := q.Get("min_count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			fail(w, fmt.Errorf("horde: %w: min_count %q is not a whole number", ErrInvalidQuery, s))
			return
		}
		sq.MinCount = n
	}
	ep, err := sq.endpoint()
	h.serve(w, r, ep, err)
}

func (h handler) stats(t ModelType) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ep, err := StatsQuery{Type: t, State: ModelState(r.URL.Query().Get("model_state"))}.endpoint()
		h.serve(w, r, ep, err)
	}
}

func (h handler) workers(w http.ResponseWriter, r *http.Request) {
	ep, err := workersEndpoint(ModelType(r.URL.Query().Get("type")))
	h.serve(w, r, ep, err)
}

// serve answers with ep's copy, or with the error of building ep.
func (h handler) serve(w http.ResponseWriter, r *http.Request, ep endpoint, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	s, err := h.c.lookup(r.Context(), ep)
	if err != nil {
		fail(w, err)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Age", strconv.FormatInt(int64(s.age/time.Second), 10))
	if s.staleErr != nil {
		hd.Set("X-Horde-Stale", "true")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(s.raw)
}

// fail maps an error to its status: 400 for a bad query, 502 when the API
// is unavailable with nothing cached, 500 only for a misconfigured Client
// (a bad base URL).
func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalidQuery):
		code = http.StatusBadRequest
	case errors.Is(err, ErrDegraded):
		code = http.StatusBadGateway
		if oe, ok := errors.AsType[*breaker.OpenError](err); ok && oe.RetryIn > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(oe.RetryIn.Seconds())), 10))
		}
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v) // only the handler's own types, which always marshal
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
