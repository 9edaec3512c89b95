package horde_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// An image model status item with every field, as the API sends it.
const goodStatus = `{"name":"stable_diffusion","count":24,"performance":1082640.0,"queued":47185920.0,"jobs":9.0,"eta":1,"type":"image"}`

// A text worker with every required field and nothing else.
const goodWorker = `{"type":"text","name":"w","id":"d7f440c5-41d5-4cab-999b-65a674d8ef34","online":true,` +
	`"requests_fulfilled":1,"kudos_rewards":2.0,"kudos_details":{"generated":1.0,"uptime":null},` +
	`"performance":"1.0 tokens per second","threads":1,"uptime":431,"maintenance_mode":false,"nsfw":false,` +
	`"trusted":false,"flagged":false,"uncompleted_jobs":0,"team":{"name":null,"id":null},"bridge_agent":"KoboldCppEmbedWorker:2:x"}`

func mustUnmarshal(s string, v any) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber() // keep 24.0 as it is written
	if err := dec.Decode(v); err != nil {
		panic(err)
	}
}

func mustMarshal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// with returns the JSON object obj with its field key set to the raw JSON
// value v, or removed when v is empty.
func with(obj, key, v string) string {
	var m map[string]any
	mustUnmarshal(obj, &m)
	if v == "" {
		delete(m, key)
	} else {
		var val any
		mustUnmarshal(v, &val)
		m[key] = val
	}
	return mustMarshal(m)
}

// Every body the Python consumer's models refuse is a failed fetch: retried,
// one breaker failure, the good copy served stale with a *BodyError naming
// the problem, and the good copy kept for the next caller.
func TestBadBodiesNeverReplaceAGoodCopy(t *testing.T) {
	type call func(context.Context, *horde.Client) (any, error)
	status := func(ctx context.Context, c *horde.Client) (any, error) {
		r, err := c.ModelStatus(ctx, horde.StatusQuery{})
		return r, err
	}
	workers := func(ctx context.Context, c *horde.Client) (any, error) {
		r, err := c.Workers(ctx, horde.Text)
		return r, err
	}
	stats := func(ctx context.Context, c *horde.Client) (any, error) {
		r, err := c.ModelStats(ctx, horde.StatsQuery{})
		return r, err
	}
	goodStats := `{"day":{"a":1},"month":{"a":2},"total":{"a":3}}`
	tests := []struct {
		name  string
		call  call
		body  string
		item  int    // the BodyError's Item
		field string // and Field
	}{
		// The four.
		{"status [{}]", status, `[{}]`, 0, "name"},
		{"status name only", status, `[{"name":"stable_diffusion"}]`, 0, "count"},
		{"status type video", status, `[` + goodStatus + `,` + with(goodStatus, "type", `"video"`) + `]`, 1, "type"},
		{"workers name only", workers, `[{"name":"w"}]`, 0, "type"},

		{"status object", status, `{"message":"maintenance"}`, -1, ""},
		{"status null item", status, `[` + goodStatus + `,null]`, 1, ""},
		{"status number item", status, `[5]`, 0, ""},
		{"status jobs 4.5", status, `[` + with(goodStatus, "jobs", `4.5`) + `]`, 0, "jobs"},
		{"status count as string", status, `[` + with(goodStatus, "count", `"24"`) + `]`, 0, "count"},
		{"status eta missing", status, `[` + with(goodStatus, "eta", "") + `]`, 0, "eta"},
		{"status name null", status, `[` + with(goodStatus, "name", `null`) + `]`, 0, "name"},
		{"status name a number", status, `[` + with(goodStatus, "name", `7`) + `]`, 0, "name"},
		{"status performance huge", status, `[` + strings.Replace(goodStatus, "1082640.0", "1e999", 1) + `]`, 0, "performance"},
		{"status count past int64", status, `[` + with(goodStatus, "count", `9223372036854775808`) + `]`, 0, "count"},
		{"status data after the array", status, `[` + goodStatus + `] []`, -1, ""},
		{"status empty body", status, ``, -1, ""},

		{"workers type video", workers, `[` + with(goodWorker, "type", `"video"`) + `]`, 0, "type"},
		{"workers team missing", workers, `[` + with(goodWorker, "team", "") + `]`, 0, "team"},
		{"workers team null", workers, `[` + with(goodWorker, "team", `null`) + `]`, 0, "team"},
		{"workers team name a number", workers, `[` + with(goodWorker, "team", `{"name":1,"id":null}`) + `]`, 0, "team.name"},
		{"workers kudos_details null", workers, `[` + with(goodWorker, "kudos_details", `null`) + `]`, 0, "kudos_details"},
		{"workers kudos uptime 0.5", workers, `[` + with(goodWorker, "kudos_details", `{"generated":1,"uptime":0.5}`) + `]`, 0, "kudos_details.uptime"},
		{"workers models null", workers, `[` + with(goodWorker, "models", `null`) + `]`, 0, "models"},
		{"workers models of numbers", workers, `[` + with(goodWorker, "models", `[1]`) + `]`, 0, "models"},
		{"workers threads 1.5", workers, `[` + with(goodWorker, "threads", `1.5`) + `]`, 0, "threads"},
		{"workers nsfw a string", workers, `[` + with(goodWorker, "nsfw", `"yes"`) + `]`, 0, "nsfw"},
		{"workers bridge_agent missing", workers, `[` + with(goodWorker, "bridge_agent", "") + `]`, 0, "bridge_agent"},
		{"workers max_pixels a string", workers, `[` + with(goodWorker, "max_pixels", `"big"`) + `]`, 0, "max_pixels"},
		{"workers null body", workers, `null`, -1, ""},

		{"stats {}", stats, `{}`, -1, "day"},
		{"stats month missing", stats, `{"day":{},"total":{}}`, -1, "month"},
		{"stats day null", stats, `{"day":null,"month":{},"total":{}}`, -1, "day"},
		{"stats fractional count", stats, with(goodStats, "total", `{"a":1.5}`), -1, "total.a"},
		{"stats null count", stats, with(goodStats, "day", `{"a":null}`), -1, "day.a"},
		{"stats array", stats, `[]`, -1, ""},
		{"stats html", stats, `<html>Service Unavailable</html>`, -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			srv := startFake(t)
			c, clk, cb := newClient(t, srv.base())
			ctx := context.Background()
			good, err := tt.call(ctx, c)
			if err != nil {
				t.Fatal(err)
			}

			clk.Advance(expired)
			srv.outage(faultserver.OK().WithBody([]byte(tt.body)))
			before := srv.Requests()
			got, err := tt.call(ctx, c)
			if err != nil {
				t.Fatalf("with a good copy cached: %v", err)
			}
			value, fetched, stale, why := resultOf(got)
			gv, gfetched, _, _ := resultOf(good)
			if !stale || !reflect.DeepEqual(value, gv) || !fetched.Equal(gfetched) {
				t.Errorf("stale=%v fetched=%v (good copy fetched %v); want the good copy, stale", stale, fetched, gfetched)
			}
			be, ok := errors.AsType[*horde.BodyError](why)
			if !ok || !errors.Is(why, horde.ErrMalformed) {
				t.Fatalf("Err = %v, want a *BodyError matching ErrMalformed", why)
			}
			if be.Item != tt.item || be.Field != tt.field {
				t.Errorf("BodyError item %d field %q, want item %d field %q (%v)", be.Item, be.Field, tt.item, tt.field, be)
			}
			if n := srv.Requests() - before; n != 3 {
				t.Errorf("%d upstream requests, want 3: a refused body is retried", n)
			}
			if n := cb.ConsecutiveFailures(); n != 1 {
				t.Errorf("breaker failures = %d, want 1", n)
			}

			// The store still holds the good copy: with the API healthy but
			// this one call's clock still past the copy's window, the next
			// call fetches anew; meanwhile the copy served stale is the good
			// one, again.
			srv.outage(faultserver.Status(503))
			again, _ := tt.call(ctx, c)
			if v, f, _, _ := resultOf(again); !reflect.DeepEqual(v, gv) || !f.Equal(gfetched) {
				t.Errorf("the next call served a copy fetched %v, want the good one of %v", f, gfetched)
			}
		})
	}
}

// resultOf unpacks the Result of any endpoint.
func resultOf(r any) (value any, fetched time.Time, stale bool, err error) {
	switch r := r.(type) {
	case horde.Result[[]horde.ModelStatus]:
		return r.Value, r.FetchedAt, r.Stale, r.Err
	case horde.Result[[]horde.Worker]:
		return r.Value, r.FetchedAt, r.Stale, r.Err
	case horde.Result[horde.ModelStats]:
		return r.Value, r.FetchedAt, r.Stale, r.Err
	}
	panic("unknown result type")
}

// Bodies the API does send, and the consumer accepts: decimals where an
// integer is expected but whole, nulls where the model allows them, absent
// optional fields, fields no one reads, workers of other types in the
// untyped list, an empty list.
func TestBodiesTheConsumerAcceptsAreServed(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, _, _ := newClient(t, srv.base())
	ctx := context.Background()

	status := `[` + with(with(with(goodStatus, "count", `24.0`), "eta", `1.0`), "new_field", `{"x":[1]}`) + `]`
	srv.outage(faultserver.OK().WithBody([]byte(status)))
	st, err := c.ModelStatus(ctx, horde.StatusQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (horde.ModelStatus{Name: "stable_diffusion", Count: 24, Performance: 1082640, Queued: 47185920, Jobs: 9, ETA: 1, Type: horde.Image}); len(st.Value) != 1 || st.Value[0] != want {
		t.Errorf("status = %+v, want %+v", st.Value, want)
	}

	interrogator := with(with(goodWorker, "type", `"interrogation"`), "name", `"i"`)
	nulls := with(with(with(with(goodWorker, "info", `null`), "max_pixels", `null`), "owner", `42`), "post-processing", `null`)
	srv.outage(faultserver.OK().WithBody([]byte(`[` + goodWorker + `,` + interrogator + `,` + nulls + `]`)))
	ws, err := c.Workers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ws.Value) != 3 || ws.Value[1].Type != "interrogation" || ws.Value[0].Models != nil ||
		ws.Value[0].KudosDetails != (horde.KudosDetails{Generated: 1}) || ws.Value[2].Owner != "" || ws.Value[2].MaxPixels != 0 {
		t.Errorf("workers = %+v", ws.Value)
	}

	srv.outage(faultserver.OK().WithBody([]byte(` [ ] `)))
	empty, err := c.Workers(ctx, horde.Image)
	if err != nil || empty.Value == nil || len(empty.Value) != 0 {
		t.Errorf("empty list: %#v, %v", empty.Value, err)
	}
}

// A body error repeats only a short prefix of what the API sent.
func TestBodyErrorIsBounded(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, _, _ := newClient(t, srv.base())
	long := strings.Repeat("x", 100_000)
	item := with(with(goodStatus, "name", `"`+long+`"`), "type", `"`+long+`"`)
	srv.outage(faultserver.OK().WithBody([]byte(`[` + item + `]`)))
	_, err := c.ModelStatus(context.Background(), horde.StatusQuery{})
	if !errors.Is(err, horde.ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
	if msg := err.Error(); len(msg) > 600 || !strings.Contains(msg, `field "type"`) || !strings.Contains(msg, "(100000 bytes)") {
		t.Errorf("error of %d bytes: %.500s", len(msg), msg)
	}
}
