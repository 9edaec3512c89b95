package horde

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// ModelType is the kind of generation a model or worker does.
type ModelType string

// The model types the API knows, as it spells them in queries and bodies.
const (
	Image ModelType = "image"
	Text  ModelType = "text"
)

// ModelState selects models by whether they are in the model reference.
type ModelState string

// The model states the API accepts in model_state.
const (
	// KnownModels are the models listed in the model reference: the default.
	KnownModels ModelState = "known"
	// CustomModels are the models workers serve that the reference lacks.
	CustomModels ModelState = "custom"
	// AllModels are both.
	AllModels ModelState = "all"
)

// Result is a value read through a Client, with where it came from.
type Result[T any] struct {
	// Value is the decoded response.
	Value T
	// FetchedAt is when the copy was fetched from the API.
	FetchedAt time.Time
	// Age is how old the copy was when the call returned.
	Age time.Duration
	// Stale is true when Value is older than the Client's FreshFor: either
	// the API could not be read (Err says why), or the copy was served at
	// once while a refresh runs in the background (Revalidating).
	Stale bool
	// Revalidating is true when Value is a stale copy served without
	// waiting, within the Client's StaleWhileRevalidate window after it
	// expired, while one background fetch refreshes it.
	Revalidating bool
	// Err is why the copy is stale because the API could not be read
	// (breaker.ErrOpen, a network error, an *httpretry.StatusError, a
	// *BodyError, the caller's context error, ErrClosed); nil when it is
	// fresh or revalidating.
	Err error
}

// ModelStatus is one model of GET /v2/status/models (the API's
// ActiveModel). The API sends Performance, Queued and Jobs as decimals
// (Jobs comes as 4.0), so they are float64; Queued and Jobs are checked to
// be whole numbers, as the consumer's model requires.
type ModelStatus struct {
	// Name is the model's name; text models carry a backend prefix such as
	// "koboldcpp/".
	Name string `json:"name"`
	// Count is how many workers serve the model. A known model with queued
	// work and no worker has Count 0 and ETA 10000.
	Count int `json:"count"`
	// Performance is the workers' average speed: megapixelsteps (image) or
	// tokens (text) per second.
	Performance float64 `json:"performance"`
	// Queued is the amount of work waiting: megapixelsteps or tokens.
	Queued float64 `json:"queued"`
	// Jobs is the number of waiting requests.
	Jobs float64 `json:"jobs"`
	// ETA is the estimated wait for new work, in seconds.
	ETA int `json:"eta"`
	// Type is the model's type.
	Type ModelType `json:"type"`
}

// ModelStats is GET /v2/stats/img/models or /v2/stats/text/models: how many
// requests each model fulfilled in the last day, the last month and in all.
// The three maps carry the same model names.
type ModelStats struct {
	// Day counts the requests of the last day, by model name.
	Day map[string]int64 `json:"day"`
	// Month counts the requests of the last month.
	Month map[string]int64 `json:"month"`
	// Total counts every request ever.
	Total map[string]int64 `json:"total"`
}

// Worker is one worker of GET /v2/workers (the API's WorkerDetails, as an
// anonymous caller sees it). The API leaves out unset fields rather than
// sending null, so the image-only fields are zero on text workers and the
// other way round, and Info and Owner are often empty.
type Worker struct {
	// Type is Image or Text; the list of every type also holds
	// "interrogation" and "alchemy" workers.
	Type              ModelType    `json:"type"`
	Name              string       `json:"name"`
	ID                string       `json:"id"`
	Online            bool         `json:"online"`
	RequestsFulfilled int64        `json:"requests_fulfilled"`
	KudosRewards      float64      `json:"kudos_rewards"`
	KudosDetails      KudosDetails `json:"kudos_details"`
	// Performance is a sentence such as "2.1 megapixelsteps per second".
	Performance string `json:"performance"`
	Threads     int    `json:"threads"`
	// Uptime is in seconds.
	Uptime          int64  `json:"uptime"`
	MaintenanceMode bool   `json:"maintenance_mode"`
	Info            string `json:"info"`
	NSFW            bool   `json:"nsfw"`
	// Owner is set only when the owner made their workers public.
	Owner           string   `json:"owner"`
	Trusted         bool     `json:"trusted"`
	Flagged         bool     `json:"flagged"`
	UncompletedJobs int64    `json:"uncompleted_jobs"`
	Models          []string `json:"models"`
	Team            Team     `json:"team"`
	BridgeAgent     string   `json:"bridge_agent"`

	// Image workers only.
	MaxPixels               int64   `json:"max_pixels"`
	MegapixelstepsGenerated float64 `json:"megapixelsteps_generated"`
	Img2Img                 bool    `json:"img2img"`
	Painting                bool    `json:"painting"`
	PostProcessing          bool    `json:"post-processing"`
	LoRA                    bool    `json:"lora"`
	ControlNet              bool    `json:"controlnet"`
	SDXLControlNet          bool    `json:"sdxl_controlnet"`

	// Text workers only.
	MaxLength        int `json:"max_length"`
	MaxContextLength int `json:"max_context_length"`
}

// KudosDetails splits a worker's kudos by how they were earned.
type KudosDetails struct {
	// Generated is the kudos earned by generating.
	Generated float64 `json:"generated"`
	// Uptime is 0 for a worker too new to have earned uptime kudos (the API
	// sends null).
	Uptime int64 `json:"uptime"`
}

// Team is the team a worker belongs to. A worker without one has an empty
// Name and ID (the API sends {"name": null, "id": null}).
type Team struct {
	// Name is the team's name.
	Name string `json:"name"`
	// ID is the team's UUID.
	ID string `json:"id"`
}

// StatusQuery selects the models of Client.ModelStatus.
type StatusQuery struct {
	// Type is Image or Text; empty means Image.
	Type ModelType
	// State is the model_state filter; empty means KnownModels.
	State ModelState
	// MinCount, when above 0, keeps only models served by at least that many
	// workers (min_count).
	MinCount int
}

// StatsQuery selects the statistics of Client.ModelStats.
type StatsQuery struct {
	// Type is Image or Text; empty means Image.
	Type ModelType
	// State is the model_state filter; empty means KnownModels. The API
	// ignores it for text models.
	State ModelState
}

// ModelStatus reads GET /v2/status/models: the models workers serve, with
// their queues and speeds.
func (c *Client) ModelStatus(ctx context.Context, q StatusQuery) (Result[[]ModelStatus], error) {
	ep, err := q.endpoint()
	if err != nil {
		return Result[[]ModelStatus]{}, err
	}
	return get(ctx, c, ep, decodeStatus)
}

// ModelStats reads GET /v2/stats/img/models or /v2/stats/text/models.
func (c *Client) ModelStats(ctx context.Context, q StatsQuery) (Result[ModelStats], error) {
	ep, err := q.endpoint()
	if err != nil {
		return Result[ModelStats]{}, err
	}
	return get(ctx, c, ep, decodeStats)
}

// Workers reads GET /v2/workers: the workers online now, of type t (Image or
// Text), or of every type when t is empty.
func (c *Client) Workers(ctx context.Context, t ModelType) (Result[[]Worker], error) {
	ep, err := workersEndpoint(t)
	if err != nil {
		return Result[[]Worker]{}, err
	}
	return get(ctx, c, ep, decodeWorkers)
}

// endpoint is one cacheable request: a path under the base URL, its query,
// and the check a 200 body must pass (validate.go).
type endpoint struct {
	path  string
	query url.Values
	check func([]byte) error
}

// key names the endpoint's copy in the Store. url.Values.Encode sorts the
// parameters, so equal queries share a copy however they were written.
func (e endpoint) key() string { return e.path + "?" + e.query.Encode() }

// checkWith makes a body check of an endpoint's decoder.
func checkWith[T any](decode func([]byte) (T, error)) func([]byte) error {
	return func(b []byte) error {
		_, err := decode(b)
		return err
	}
}

func (q StatusQuery) endpoint() (endpoint, error) {
	t, err := modelType(q.Type, Image)
	if err != nil {
		return endpoint{}, err
	}
	s, err := modelState(q.State)
	if err != nil {
		return endpoint{}, err
	}
	if q.MinCount < 0 {
		return endpoint{}, fmt.Errorf("horde: %w: min_count %d is negative", ErrInvalidQuery, q.MinCount)
	}
	v := url.Values{"type": {string(t)}, "model_state": {string(s)}}
	if q.MinCount > 0 {
		v.Set("min_count", strconv.Itoa(q.MinCount))
	}
	return endpoint{path: "v2/status/models", query: v, check: checkWith(decodeStatus)}, nil
}

func (q StatsQuery) endpoint() (endpoint, error) {
	t, err := modelType(q.Type, Image)
	if err != nil {
		return endpoint{}, err
	}
	s, err := modelState(q.State)
	if err != nil {
		return endpoint{}, err
	}
	// The stats paths abbreviate image as "img".
	seg := "img"
	if t == Text {
		seg = "text"
	}
	return endpoint{path: "v2/stats/" + seg + "/models", query: url.Values{"model_state": {string(s)}},
		check: checkWith(decodeStats)}, nil
}

func workersEndpoint(t ModelType) (endpoint, error) {
	v := url.Values{}
	if t != "" {
		if _, err := modelType(t, ""); err != nil {
			return endpoint{}, err
		}
		v.Set("type", string(t))
	}
	return endpoint{path: "v2/workers", query: v, check: checkWith(decodeWorkers)}, nil
}

// The error messages repeat at most a short prefix of a bad value: it may
// come from an HTTP query of any length.
func modelType(t, def ModelType) (ModelType, error) {
	switch t {
	case "":
		return def, nil
	case Image, Text:
		return t, nil
	}
	return "", fmt.Errorf("horde: %w: type %s: want %q or %q", ErrInvalidQuery, quoteShort(string(t), maxQuoted), Image, Text)
}

func modelState(s ModelState) (ModelState, error) {
	switch s {
	case "":
		return KnownModels, nil
	case KnownModels, CustomModels, AllModels:
		return s, nil
	}
	return "", fmt.Errorf("horde: %w: model_state %s: want %q, %q or %q",
		ErrInvalidQuery, quoteShort(string(s), maxQuoted), KnownModels, CustomModels, AllModels)
}

// get serves ep through the cache and decodes the copy.
func get[T any](ctx context.Context, c *Client, ep endpoint, decode func([]byte) (T, error)) (Result[T], error) {
	s, err := c.lookup(ctx, ep)
	if err != nil {
		return Result[T]{}, err
	}
	v, err := decode(s.raw)
	if err != nil {
		// lookup checked the copy; only a copy that changed in between (a
		// Store that hands out shared memory and a writer that reuses it)
		// could get here.
		return Result[T]{}, c.degraded(ep, fmt.Errorf("cached copy: %w", err))
	}
	return Result[T]{Value: v, FetchedAt: s.at, Age: s.age, Stale: s.stale, Revalidating: s.revalidating, Err: s.err}, nil
}

// degraded is the error of a call with nothing to serve.
func (c *Client) degraded(ep endpoint, cause error) error {
	return fmt.Errorf("horde: GET %s: %w: %w", ep.key(), ErrDegraded, cause)
}
