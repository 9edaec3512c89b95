package horde

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
)

// NewHandler returns the HTTP API of the AI Horde proxy, served from c:
//
//	GET /api/heartbeat                  the seed's heartbeat, with c's breaker
//	GET /api/v2/status/models           ?type=image|text &model_state=known|custom|all &min_count=N
//	GET /api/v2/stats/img/models        ?model_state=
//	GET /api/v2/stats/text/models       ?model_state=
//	GET /api/v2/workers                 ?type=image|text
//
// The data endpoints mirror the API's own paths and answer with the API's
// JSON as it was received. Each carries an Age header (seconds since the
// copy was fetched). A copy older than c's FreshFor also carries
// X-Horde-Stale: true, and X-Horde-Revalidating: true when it was served at
// once while a background fetch refreshes it. With no copy to serve they
// answer 502 (and Retry-After while the breaker is open).
//
// Input is refused, never guessed at: a query that does not parse (bad
// percent-encoding, a semicolon), a parameter given twice or empty, an
// unknown type or model_state, or a min_count that is not a whole number
// answers 400; an unknown path 404; a method other than GET or HEAD 405.
// Other query parameters are ignored, as the API ignores them. Every error
// is a JSON body {"error": "..."} of bounded size, repeating at most a short
// prefix of the input.
func NewHandler(c *Client) http.Handler {
	h := handler{c: c}
	return h.routes()
}

type handler struct{ c *Client }

// route is one endpoint: its handler and the query parameters it reads.
type route struct {
	serve  func(handler, http.ResponseWriter, *http.Request, query)
	params []string
}

func (h handler) routes() http.Handler {
	routes := map[string]route{
		"/api/heartbeat":            {serve: handler.heartbeat},
		"/api/v2/status/models":     {serve: handler.status, params: []string{"type", "model_state", "min_count"}},
		"/api/v2/stats/img/models":  {serve: statsFor(Image), params: []string{"model_state"}},
		"/api/v2/stats/text/models": {serve: statsFor(Text), params: []string{"model_state"}},
		"/api/v2/workers":           {serve: handler.workers, params: []string{"type"}},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := routes[r.URL.Path]
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s; the endpoints are %s",
				quoteShort(r.URL.Path, maxQuoted), endpointList))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed: use GET",
				quoteShort(r.Method, maxQuoted)))
			return
		}
		q, err := parseQuery(r.URL.RawQuery, rt.params)
		if err != nil {
			fail(w, err)
			return
		}
		rt.serve(h, w, r, q)
	})
}

const endpointList = "/api/heartbeat, /api/v2/status/models, /api/v2/stats/img/models, " +
	"/api/v2/stats/text/models and /api/v2/workers"

// query is the parameters an endpoint reads, each given at most once.
type query map[string]string

// parseQuery parses raw strictly, keeping the parameters in known. Where
// url.URL.Query drops what it cannot parse and lets a later value win,
// this refuses the request: a query the client wrote wrong must not be
// answered as if it had asked for the defaults.
func parseQuery(raw string, known []string) (query, error) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return nil, fmt.Errorf("horde: %w: the query does not parse: %s", ErrInvalidQuery, queryProblem(err))
	}
	q := query{}
	for _, name := range known {
		vs, ok := vals[name]
		switch {
		case !ok:
			continue
		case len(vs) > 1:
			return nil, fmt.Errorf("horde: %w: %s is given %d times", ErrInvalidQuery, name, len(vs))
		case vs[0] == "":
			return nil, fmt.Errorf("horde: %w: %s is empty", ErrInvalidQuery, name)
		}
		q[name] = vs[0]
	}
	return q, nil
}

// queryProblem describes a url.ParseQuery error without repeating more than
// a short prefix of the query (its messages quote the bad part whole).
func queryProblem(err error) string {
	var esc url.EscapeError
	switch {
	case errors.As(err, &esc):
		return "bad percent-encoding " + quoteShort(string(esc), maxQuoted)
	case strings.Contains(err.Error(), "semicolon"):
		return "a semicolon separates parameters; use &"
	}
	return "malformed"
}

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
func (h handler) heartbeat(w http.ResponseWriter, _ *http.Request, _ query) {
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

func (h handler) status(w http.ResponseWriter, r *http.Request, q query) {
	sq := StatusQuery{Type: ModelType(q["type"]), State: ModelState(q["model_state"])}
	if s, ok := q["min_count"]; ok {
		n, err := wholeParam(s)
		if err != nil {
			fail(w, fmt.Errorf("horde: %w: min_count %s: %w", ErrInvalidQuery, quoteShort(s, maxQuoted), err))
			return
		}
		sq.MinCount = n
	}
	ep, err := sq.endpoint()
	h.serve(w, r, ep, err)
}

// wholeParam parses a count written as plain digits: no sign, no spaces.
func wholeParam(s string) (int, error) {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, errors.New("want a whole number of 0 or more")
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("too large")
	}
	return n, nil
}

// statsFor serves the statistics of type t.
func statsFor(t ModelType) func(handler, http.ResponseWriter, *http.Request, query) {
	return func(h handler, w http.ResponseWriter, r *http.Request, q query) {
		ep, err := StatsQuery{Type: t, State: ModelState(q["model_state"])}.endpoint()
		h.serve(w, r, ep, err)
	}
}

func (h handler) workers(w http.ResponseWriter, r *http.Request, q query) {
	ep, err := workersEndpoint(ModelType(q["type"]))
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
	if s.stale {
		hd.Set("X-Horde-Stale", "true")
	}
	if s.revalidating {
		hd.Set("X-Horde-Revalidating", "true")
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
	writeError(w, code, httpretry.RedactError(err))
}

// maxErrorMessage bounds an error body's message. The messages quote input
// and the API's text only in short prefixes already; this is the backstop.
const maxErrorMessage = 1024

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": truncate(msg, maxErrorMessage)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // an error reads "use &", not "use \u0026"
	_ = enc.Encode(v)        // only the handler's own types, which always marshal
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}
