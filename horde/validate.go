package horde

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// This file holds every rule a 200 body from the API must pass, one decoder
// per endpoint. The rules are those of the Python consumer's pydantic models
// (horde-model-reference, integrations/horde_api_models.py), so that the
// proxy never serves, nor caches over a good copy, what its consumer would
// refuse:
//
//   - A field without a default must be present and not null; an optional
//     one may be absent or, where the model allows None, null.
//   - Integer fields take any JSON number with no fractional part, 4 and 4.0
//     alike (pydantic's lax int), since the API writes some counts as floats.
//   - type is "image" or "text" for models; workers may also be
//     "interrogation" or "alchemy", as the untyped worker list carries them.
//   - Fields nobody reads (owner, messages, anything new) are ignored.
//
// Two differences, both stricter where the API never sends the input:
// numbers must be JSON numbers (pydantic also takes "4"), and the stats maps
// day, month and total must be present (pydantic defaults them to empty, so
// {} would replace good statistics with none).

// BodyError says why a 200 response body from the API was refused. It
// matches ErrMalformed (errors.Is); Err, when set, is the JSON decoder's own
// error.
type BodyError struct {
	// Item is the index of the offending list item, or -1 when the body as a
	// whole is at fault.
	Item int
	// Name is the item's "name", when it has a usable one, to find it in a
	// long list.
	Name string
	// Field is the offending JSON field, dotted for nested ones
	// ("kudos_details.uptime"); empty when the item or body itself is at
	// fault.
	Field string
	// Problem says what is wrong: "missing", "null", "4.5 is not a whole
	// number", ...
	Problem string
	// Err is the decoder's error behind Problem, if any.
	Err error
}

// maxQuoted bounds how much of the API's own text (a name, a value) an
// error message repeats: errors are logged and can reach a 502 body.
const maxQuoted = 48

func (e *BodyError) Error() string {
	var b strings.Builder
	b.WriteString("horde: malformed response body from AI Horde: ")
	if e.Item >= 0 {
		fmt.Fprintf(&b, "item %d", e.Item)
		if e.Name != "" {
			fmt.Fprintf(&b, " (name %s)", quoteShort(e.Name, maxQuoted))
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Problem)
	return b.String()
}

// Is makes a BodyError match ErrMalformed.
func (e *BodyError) Is(target error) bool { return target == ErrMalformed }

// Unwrap returns the decoder's error, if any.
func (e *BodyError) Unwrap() error { return e.Err }

// quoteShort quotes s, keeping at most max bytes of it (cut on a rune
// boundary) and saying how long it was when cut.
func quoteShort(s string, max int) string {
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// decodeStatus decodes and checks GET /v2/status/models.
func decodeStatus(body []byte) ([]ModelStatus, error) {
	return decodeList(body, func(w *statusWire, f *fieldCheck) ModelStatus {
		return ModelStatus{
			Name:        f.str("name", w.Name, required),
			Count:       int(f.whole("count", w.Count, required)),
			Performance: f.float("performance", w.Performance, required),
			Queued:      float64(f.whole("queued", w.Queued, required)),
			Jobs:        float64(f.whole("jobs", w.Jobs, required)),
			ETA:         int(f.whole("eta", w.ETA, required)),
			Type:        ModelType(f.oneOf("type", w.Type, required, modelTypes)),
		}
	}, func(w *statusWire) opt[string] { return w.Name })
}

// decodeStats decodes and checks GET /v2/stats/{img,text}/models.
func decodeStats(body []byte) (ModelStats, error) {
	var w statsWire
	if err := decodeValue(body, '{', &w); err != nil {
		return ModelStats{}, err
	}
	f := fieldCheck{item: -1}
	s := ModelStats{
		Day:   f.counts("day", w.Day),
		Month: f.counts("month", w.Month),
		Total: f.counts("total", w.Total),
	}
	if f.err != nil {
		return ModelStats{}, f.err
	}
	return s, nil
}

// decodeWorkers decodes and checks GET /v2/workers.
func decodeWorkers(body []byte) ([]Worker, error) {
	return decodeList(body, func(w *workerWire, f *fieldCheck) Worker {
		v := Worker{
			Type:              ModelType(f.oneOf("type", w.Type, required, workerTypes)),
			Name:              f.str("name", w.Name, required),
			ID:                f.str("id", w.ID, required),
			Online:            f.bool("online", w.Online, required),
			RequestsFulfilled: f.whole("requests_fulfilled", w.RequestsFulfilled, required),
			KudosRewards:      f.float("kudos_rewards", w.KudosRewards, required),
			Performance:       f.str("performance", w.Performance, required),
			Threads:           int(f.whole("threads", w.Threads, required)),
			Uptime:            f.whole("uptime", w.Uptime, required),
			MaintenanceMode:   f.bool("maintenance_mode", w.MaintenanceMode, required),
			Info:              f.str("info", w.Info, nullable),
			NSFW:              f.bool("nsfw", w.NSFW, required),
			Owner:             lenientString(w.Owner),
			Trusted:           f.bool("trusted", w.Trusted, required),
			Flagged:           f.bool("flagged", w.Flagged, required),
			UncompletedJobs:   f.whole("uncompleted_jobs", w.UncompletedJobs, required),
			Models:            f.strings("models", w.Models, notNull),
			BridgeAgent:       f.str("bridge_agent", w.BridgeAgent, required),

			MaxPixels:               f.whole("max_pixels", w.MaxPixels, nullable),
			MegapixelstepsGenerated: f.float("megapixelsteps_generated", w.MegapixelstepsGenerated, nullable),
			Img2Img:                 f.bool("img2img", w.Img2Img, nullable),
			Painting:                f.bool("painting", w.Painting, nullable),
			PostProcessing:          f.bool("post-processing", w.PostProcessing, nullable),
			LoRA:                    f.bool("lora", w.LoRA, nullable),
			ControlNet:              f.bool("controlnet", w.ControlNet, nullable),
			SDXLControlNet:          f.bool("sdxl_controlnet", w.SDXLControlNet, nullable),

			MaxLength:        int(f.whole("max_length", w.MaxLength, nullable)),
			MaxContextLength: int(f.whole("max_context_length", w.MaxContextLength, nullable)),
		}
		if f.present("kudos_details", w.KudosDetails.present, w.KudosDetails.null, required) {
			kd := &w.KudosDetails.v
			v.KudosDetails = KudosDetails{
				Generated: f.float("kudos_details.generated", kd.Generated, nullable),
				Uptime:    f.whole("kudos_details.uptime", kd.Uptime, nullable),
			}
		}
		if f.present("team", w.Team.present, w.Team.null, required) {
			v.Team = Team{
				Name: f.str("team.name", w.Team.v.Name, nullable),
				ID:   f.str("team.id", w.Team.v.ID, nullable),
			}
		}
		return v
	}, func(w *workerWire) opt[string] { return w.Name })
}

var (
	modelTypes  = []string{string(Image), string(Text)}
	workerTypes = []string{string(Image), string(Text), "interrogation", "alchemy"}
)

// The wire forms: every field records whether it was present and null,
// which encoding/json cannot tell from absent on its own.

type statusWire struct {
	Name        opt[string] `json:"name"`
	Count       number      `json:"count"`
	Performance number      `json:"performance"`
	Queued      number      `json:"queued"`
	Jobs        number      `json:"jobs"`
	ETA         number      `json:"eta"`
	Type        opt[string] `json:"type"`
}

type statsWire struct {
	Day   opt[map[string]number] `json:"day"`
	Month opt[map[string]number] `json:"month"`
	Total opt[map[string]number] `json:"total"`
}

type workerWire struct {
	Type              opt[string]     `json:"type"`
	Name              opt[string]     `json:"name"`
	ID                opt[string]     `json:"id"`
	Online            opt[bool]       `json:"online"`
	RequestsFulfilled number          `json:"requests_fulfilled"`
	KudosRewards      number          `json:"kudos_rewards"`
	KudosDetails      opt[kudosWire]  `json:"kudos_details"`
	Performance       opt[string]     `json:"performance"`
	Threads           number          `json:"threads"`
	Uptime            number          `json:"uptime"`
	MaintenanceMode   opt[bool]       `json:"maintenance_mode"`
	Info              opt[string]     `json:"info"`
	NSFW              opt[bool]       `json:"nsfw"`
	Owner             json.RawMessage `json:"owner"`
	Trusted           opt[bool]       `json:"trusted"`
	Flagged           opt[bool]       `json:"flagged"`
	UncompletedJobs   number          `json:"uncompleted_jobs"`
	Models            opt[[]string]   `json:"models"`
	Team              opt[teamWire]   `json:"team"`
	BridgeAgent       opt[string]     `json:"bridge_agent"`

	MaxPixels               number    `json:"max_pixels"`
	MegapixelstepsGenerated number    `json:"megapixelsteps_generated"`
	Img2Img                 opt[bool] `json:"img2img"`
	Painting                opt[bool] `json:"painting"`
	PostProcessing          opt[bool] `json:"post-processing"`
	LoRA                    opt[bool] `json:"lora"`
	ControlNet              opt[bool] `json:"controlnet"`
	SDXLControlNet          opt[bool] `json:"sdxl_controlnet"`

	MaxLength        number `json:"max_length"`
	MaxContextLength number `json:"max_context_length"`
}

type kudosWire struct {
	Generated number `json:"generated"`
	Uptime    number `json:"uptime"`
}

type teamWire struct {
	Name opt[string] `json:"name"`
	ID   opt[string] `json:"id"`
}

// opt is a field that may be absent or null.
type opt[T any] struct {
	v             T
	present, null bool
}

// UnmarshalJSON records presence; a type mismatch inside comes back as a
// *json.UnmarshalTypeError, to which the decoder adds the field's name.
func (o *opt[T]) UnmarshalJSON(b []byte) error {
	o.present = true
	if string(b) == "null" {
		o.null = true
		return nil
	}
	return json.Unmarshal(b, &o.v)
}

// number is a numeric field kept as its literal, so that a whole number can
// be told from a fraction exactly and a large count loses no digit.
type number struct {
	lit           string
	present, null bool
}

// UnmarshalJSON accepts a JSON number or null. The decoder has already
// checked that b is one valid JSON value, so its first byte says its kind.
func (n *number) UnmarshalJSON(b []byte) error {
	n.present = true
	switch c := b[0]; {
	case c == 'n':
		n.null = true
		return nil
	case c == '-' || c >= '0' && c <= '9':
		n.lit = string(b)
		return nil
	}
	return &json.UnmarshalTypeError{Value: jsonKind(b[0]), Type: reflect.TypeFor[float64]()}
}

func jsonKind(c byte) string {
	switch c {
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case '[':
		return "array"
	case '{':
		return "object"
	}
	return "value"
}

// lenientString is a field nobody validates: its string value, or "" when
// it is absent or anything else.
func lenientString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// presence is what a field's model says about absence and null.
type presence uint8

const (
	// required: a field without a default, present and not null.
	required presence = iota
	// nullable: "X | None = None", may be absent or null.
	nullable
	// notNull: a field with a default (default_factory), may be absent but
	// not null.
	notNull
)

// fieldCheck applies the rules to one item's fields and keeps the first
// problem; after one, the rest of the item is not judged.
type fieldCheck struct {
	item int
	err  *BodyError
}

func (f *fieldCheck) fail(field, problem string) {
	if f.err == nil {
		f.err = &BodyError{Item: f.item, Field: field, Problem: problem}
	}
}

// present reports whether the field has a value to check, and records a
// problem when the model forbids its absence or null.
func (f *fieldCheck) present(field string, present, null bool, p presence) bool {
	switch {
	case f.err != nil:
		return false
	case !present:
		if p == required {
			f.fail(field, "missing")
		}
		return false
	case null:
		if p != nullable {
			f.fail(field, "null")
		}
		return false
	}
	return true
}

func (f *fieldCheck) str(field string, o opt[string], p presence) string {
	if !f.present(field, o.present, o.null, p) {
		return ""
	}
	return o.v
}

func (f *fieldCheck) bool(field string, o opt[bool], p presence) bool {
	if !f.present(field, o.present, o.null, p) {
		return false
	}
	return o.v
}

func (f *fieldCheck) strings(field string, o opt[[]string], p presence) []string {
	if !f.present(field, o.present, o.null, p) {
		return nil
	}
	return o.v
}

func (f *fieldCheck) oneOf(field string, o opt[string], p presence, allowed []string) string {
	if !f.present(field, o.present, o.null, p) {
		return ""
	}
	for _, a := range allowed {
		if o.v == a {
			return a
		}
	}
	f.fail(field, fmt.Sprintf("%s is not one of %q", quoteShort(o.v, maxQuoted), allowed))
	return ""
}

func (f *fieldCheck) float(field string, n number, p presence) float64 {
	if !f.present(field, n.present, n.null, p) {
		return 0
	}
	v, err := strconv.ParseFloat(n.lit, 64)
	if err != nil {
		f.fail(field, fmt.Sprintf("%s is out of range", quoteShort(n.lit, maxQuoted)))
	}
	return v
}

// whole is an integer field: a JSON number with no fractional part that fits
// an int64.
func (f *fieldCheck) whole(field string, n number, p presence) int64 {
	if !f.present(field, n.present, n.null, p) {
		return 0
	}
	v, ok := wholeNumber(n.lit)
	if !ok {
		f.fail(field, fmt.Sprintf("%s is not a whole number", quoteShort(n.lit, maxQuoted)))
	}
	return v
}

func wholeNumber(lit string) (int64, bool) {
	if v, err := strconv.ParseInt(lit, 10, 64); err == nil {
		return v, true
	}
	v, err := strconv.ParseFloat(lit, 64)
	// 2^63 is exactly representable; anything from it up overflows int64.
	if err != nil || v != math.Trunc(v) || v >= math.Exp2(63) || v < -math.Exp2(63) {
		return 0, false
	}
	return int64(v), true
}

// counts is one of the stats maps: required, each value a whole number.
func (f *fieldCheck) counts(field string, o opt[map[string]number]) map[string]int64 {
	if !f.present(field, o.present, o.null, required) {
		return nil
	}
	m := make(map[string]int64, len(o.v))
	for name, n := range o.v {
		m[name] = f.whole(field+"."+name, n, required)
		if f.err != nil {
			// The model's name is the API's text: bound it in the message.
			f.err.Field = field + "." + truncate(name, maxQuoted)
			return nil
		}
	}
	return m
}

func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !isRuneStart(s[max]) {
		max--
	}
	return s[:max] + "…"
}

// decodeList decodes a JSON array item by item, converting each with conv
// and stopping at the first item that fails its checks. name returns an
// item's name for the error message. Streaming the items keeps one item's
// wire form in memory at a time, not the whole list's.
func decodeList[W, V any](body []byte, conv func(*W, *fieldCheck) V, name func(*W) opt[string]) ([]V, error) {
	if err := peekKind(body, '['); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the opening [
		return nil, bodyError(err)
	}
	var out []V
	for i := 0; dec.More(); i++ {
		var w *W
		if err := dec.Decode(&w); err != nil {
			return nil, itemError(i, err)
		}
		if w == nil {
			return nil, &BodyError{Item: i, Problem: "null where an object is expected"}
		}
		f := fieldCheck{item: i}
		v := conv(w, &f)
		if f.err != nil {
			if n := name(w); n.present && !n.null {
				f.err.Name = n.v
			}
			return nil, f.err
		}
		out = append(out, v)
	}
	if _, err := dec.Token(); err != nil { // the closing ]
		return nil, bodyError(err)
	}
	if err := expectEnd(dec); err != nil {
		return nil, err
	}
	if out == nil {
		out = []V{} // [] is a valid empty list, not a missing one
	}
	return out, nil
}

// decodeValue decodes a body that must be one JSON value opening with open
// into v. peekKind has refused null, so v is set.
func decodeValue(body []byte, open json.Delim, v any) error {
	if err := peekKind(body, open); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return itemError(-1, err)
	}
	return expectEnd(dec)
}

// peekKind refuses a body whose JSON value is not of the kind open starts,
// with a message naming both kinds.
func peekKind(body []byte, open json.Delim) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return &BodyError{Item: -1, Problem: "the body is empty"}
	}
	if trimmed[0] == byte(open) {
		return nil
	}
	kind := jsonKind(trimmed[0])
	switch trimmed[0] {
	case 'n':
		kind = "null"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		kind = "a number"
	case '"', 't', 'f', '[', '{':
		kind = "a JSON " + kind
	default:
		kind = "not JSON"
	}
	return &BodyError{Item: -1, Problem: fmt.Sprintf("%s where %s is expected", kind, kindName(open))}
}

func expectEnd(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return &BodyError{Item: -1, Problem: "data after the JSON value"}
	}
	return nil
}

func kindName(open json.Delim) string {
	if open == '[' {
		return "a JSON array"
	}
	return "a JSON object"
}

// itemError turns a decoder error inside item i (or the whole body, -1)
// into a BodyError naming the field when the decoder knows it.
func itemError(i int, err error) error {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
		return &BodyError{Item: i, Field: te.Field,
			Problem: fmt.Sprintf("a JSON %s where %s is expected", te.Value, goKind(te.Type)), Err: err}
	}
	be := bodyError(err).(*BodyError)
	be.Item = i
	return be
}

// bodyError wraps an error of the decoder's that concerns the body's
// syntax.
func bodyError(err error) error {
	switch e := err.(type) {
	case *json.SyntaxError:
		return &BodyError{Item: -1, Problem: fmt.Sprintf("not valid JSON at byte %d", e.Offset), Err: err}
	case *json.UnmarshalTypeError:
		return &BodyError{Item: -1, Problem: fmt.Sprintf("a JSON %s where %s is expected", e.Value, goKind(e.Type)), Err: err}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// Not wrapped: io.ErrUnexpectedEOF would make the error look like a
		// connection cut short (httpretry.IsTransient), which the body, read
		// whole, was not.
		return &BodyError{Item: -1, Problem: "the body ends before the JSON value does"}
	}
	return &BodyError{Item: -1, Problem: "not valid JSON", Err: err}
}

// goKind names the JSON a Go type expects.
func goKind(t reflect.Type) string {
	if t == nil {
		return "another kind"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a bool"
	case reflect.Float64, reflect.Int, reflect.Int64:
		return "a number"
	case reflect.Slice:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "another kind"
}
