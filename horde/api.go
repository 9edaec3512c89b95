package horde

import (
	"bytes"
	"context"
	"encoding/json"
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
	// Stale is true when the API could not be read and Value is the last
	// good copy, older than the Client's FreshFor.
	Stale bool
	// Err is why the copy is stale (breaker.ErrOpen, a network error, an
	// *httpretry.StatusError, ErrMalformed, the caller's context error);
	// nil when it is fresh.
	Err error
}

// ModelStatus is one model of GET /v2/status/models (the API's
// ActiveModel). The API sends Performance, Queued and Jobs as decimals
// (Jobs comes as 4.0), so they are float64.
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
	Day   map[string]int64 `json:"day"`
	Month map[string]int64 `json:"month"`
	Total map[string]int64 `json:"total"`
}

// Worker is one worker of GET /v2/workers (the API's WorkerDetails, as an
// anonymous caller sees it). The API leaves out unset fields rather than
// sending null, so the image-only fields are zero on text workers and the
// other way round, and Info and Owner are often empty.
type Worker struct {
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
	Generated float64 `json:"generated"`
	// Uptime is 0 for a worker too new to have earned uptime kudos (the API
	// sends null).
	Uptime int64 `json:"uptime"`
}

// Team is the team a worker belongs to. A worker without one has an empty
// Name and ID (the API sends {"name": null, "id": null}).
type Team struct {
	Name string `json:"name"`
	ID   string `json:"id"`
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
	return get[[]ModelStatus](ctx, c, ep)
}

// ModelStats reads GET /v2/stats/img/models or /v2/stats/text/models.
func (c *Client) ModelStats(ctx context.Context, q StatsQuery) (Result[ModelStats], error) {
	ep, err := q.endpoint()
	if err != nil {
		return Result[ModelStats]{}, err
	}
	return get[ModelStats](ctx, c, ep)
}

// Workers reads GET /v2/workers: the workers online now, of type t (Image or
// Text), or of every type when t is empty.
func (c *Client) Workers(ctx context.Context, t ModelType) (Result[[]Worker], error) {
	ep, err := workersEndpoint(t)
	if err != nil {
		return Result[[]Worker]{}, err
	}
	return get[[]Worker](ctx, c, ep)
}

// endpoint is one cacheable request: a path under the base URL, its query,
// and the check that a 200 body decodes into the endpoint's type.
type endpoint struct {
	path  string
	query url.Values
	check func([]byte) error
}

// key names the endpoint's copy in the Store. url.Values.Encode sorts the
// parameters, so equal queries share a copy however they were written.
func (e endpoint) key() string { return e.path + "?" + e.query.Encode() }

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
	return endpoint{path: "v2/status/models", query: v, check: check[[]ModelStatus]}, nil
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
		check: check[ModelStats]}, nil
}

func workersEndpoint(t ModelType) (endpoint, error) {
	v := url.Values{}
	if t != "" {
		if _, err := modelType(t, ""); err != nil {
			return endpoint{}, err
		}
		v.Set("type", string(t))
	}
	return endpoint{path: "v2/workers", query: v, check: check[[]Worker]}, nil
}

func modelType(t, def ModelType) (ModelType, error) {
	switch t {
	case "":
		return def, nil
	case Image, Text:
		return t, nil
	}
	return "", fmt.Errorf("horde: %w: type %q: want %q or %q", ErrInvalidQuery, t, Image, Text)
}

func modelState(s ModelState) (ModelState, error) {
	switch s {
	case "":
		return KnownModels, nil
	case KnownModels, CustomModels, AllModels:
		return s, nil
	}
	return "", fmt.Errorf("horde: %w: model_state %q: want %q, %q or %q",
		ErrInvalidQuery, s, KnownModels, CustomModels, AllModels)
}

// get serves ep through the cache and decodes the copy.
func get[T any](ctx context.Context, c *Client, ep endpoint) (Result[T], error) {
	s, err := c.lookup(ctx, ep)
	if err != nil {
		return Result[T]{}, err
	}
	v, err := decode[T](s.raw)
	if err != nil {
		// Only a copy another process put in a shared Store can get here:
		// this one checked every copy before storing it.
		return Result[T]{}, c.degraded(ep, fmt.Errorf("cached copy: %w", err))
	}
	return Result[T]{Value: v, FetchedAt: s.at, Age: s.age, Stale: s.staleErr != nil, Err: s.staleErr}, nil
}

// decode is json.Unmarshal that also refuses a bare null, which would
// decode without error into an empty value and replace a good copy.
func decode[T any](raw []byte) (T, error) {
	var v T
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return v, fmt.Errorf("%w: the body is null", ErrMalformed)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return v, nil
}

func check[T any](raw []byte) error {
	_, err := decode[T](raw)
	return err
}

// degraded is the error of a call with nothing to serve.
func (c *Client) degraded(ep endpoint, cause error) error {
	return fmt.Errorf("horde: GET %s: %w: %w", ep.key(), ErrDegraded, cause)
}
