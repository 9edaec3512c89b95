package horde_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

func TestFreshFetchDecodesEveryFixture(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, _, _ := newClient(t, srv.base())
	ctx := context.Background()

	// The traps the fixtures hold, so this test keeps meaning something.
	for file, trap := range map[string]string{
		"status_models_image.json": `"jobs": 4.0`,
		"workers_image.json":       `"name": null`,
	} {
		if !bytes.Contains(srv.fx[file], []byte(trap)) {
			t.Fatalf("fixture %s no longer contains %s", file, trap)
		}
	}

	img, err := c.ModelStatus(ctx, horde.StatusQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Stale || img.Err != nil || img.Age != 0 || !img.FetchedAt.Equal(epoch) {
		t.Errorf("fresh fetch: stale=%v err=%v age=%v fetched=%v", img.Stale, img.Err, img.Age, img.FetchedAt)
	}
	wantImg := []horde.ModelStatus{
		{Name: "AlbedoBase XL (SDXL)", Count: 19, Performance: 1479555.6, Queued: 125829120, Jobs: 4, ETA: 4, Type: horde.Image},
		{Name: "WAI-NSFW-illustrious-SDXL", Count: 0, Performance: 1311520.7, Queued: 94371840, Jobs: 3, ETA: 10000, Type: horde.Image},
	}
	if len(img.Value) != 6 || img.Value[0] != wantImg[0] || img.Value[5] != wantImg[1] {
		t.Errorf("image status = %+v", img.Value)
	}

	txt, err := c.ModelStatus(ctx, horde.StatusQuery{Type: horde.Text, MinCount: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := txt.Value[0]; len(txt.Value) != 6 || got.Name != "koboldcpp/LLaMA2-13B-Psyfighter2" ||
		got.Performance != 11.4 || got.Queued != 1024 || got.Jobs != 2 || got.Type != horde.Text {
		t.Errorf("text status = %+v", txt.Value)
	}

	istats, err := c.ModelStats(ctx, horde.StatsQuery{Type: horde.Image})
	if err != nil {
		t.Fatal(err)
	}
	if s := istats.Value; s.Day["AlbedoBase XL (SDXL)"] != 21843 || s.Month["ICBINP - I Can't Believe It's Not Photography"] != 1874 ||
		s.Total["stable_diffusion"] != 24873419 || len(s.Day) != 6 || len(s.Month) != 6 || len(s.Total) != 6 {
		t.Errorf("image stats = %+v", s)
	}
	tstats, err := c.ModelStats(ctx, horde.StatsQuery{Type: horde.Text})
	if err != nil {
		t.Fatal(err)
	}
	if s := tstats.Value; s.Day["koboldcpp/Lumimaid-v0.2-8B-Q8_0"] != 96 || s.Total["aphrodite/KoboldAI/LLaMA2-13B-Psyfighter2"] != 6840152 {
		t.Errorf("text stats = %+v", s)
	}

	iw, err := c.Workers(ctx, horde.Image)
	if err != nil {
		t.Fatal(err)
	}
	if len(iw.Value) != 4 {
		t.Fatalf("%d image workers, want 4", len(iw.Value))
	}
	nightjar, quietmoth, fresh := iw.Value[0], iw.Value[1], iw.Value[3]
	if nightjar.Team != (horde.Team{Name: "Lurking Lanterns", ID: "c27beb7a-1b44-43ce-8480-60cca8dab34c"}) ||
		nightjar.Owner != "nightjar#48213" || nightjar.KudosRewards != 6032020 ||
		nightjar.KudosDetails != (horde.KudosDetails{Generated: 5698211, Uptime: 333809}) ||
		nightjar.MaxPixels != 4194304 || nightjar.MegapixelstepsGenerated != 7012455 || !nightjar.PostProcessing ||
		!nightjar.SDXLControlNet || nightjar.Type != horde.Image || !nightjar.Online || nightjar.Uptime != 4172610 ||
		!reflect.DeepEqual(nightjar.Models, []string{"AlbedoBase XL (SDXL)", "Juggernaut XL", "Flux.1-Schnell fp8 (Compact)"}) {
		t.Errorf("image worker 0 = %+v", nightjar)
	}
	// A null team, and fields the API leaves out when unset.
	if quietmoth.Team != (horde.Team{}) || quietmoth.Info != "" || quietmoth.Owner != "" || quietmoth.MaxLength != 0 ||
		quietmoth.Name != "quietmoth-3060" || quietmoth.UncompletedJobs != 37 {
		t.Errorf("image worker 1 = %+v", quietmoth)
	}
	// kudos_details.uptime is null for a worker under 600 s of uptime.
	if fresh.KudosDetails != (horde.KudosDetails{Generated: 148}) || fresh.Uptime != 431 {
		t.Errorf("image worker 3 = %+v", fresh)
	}

	tw, err := c.Workers(ctx, horde.Text)
	if err != nil {
		t.Fatal(err)
	}
	if w := tw.Value[0]; len(tw.Value) != 4 || w.MaxLength != 512 || w.MaxContextLength != 4096 || w.MaxPixels != 0 ||
		w.Img2Img || w.Type != horde.Text || w.BridgeAgent != "KoboldCppEmbedWorker:2:https://github.com/LostRuins/koboldcpp" {
		t.Errorf("text workers = %+v", tw.Value)
	}
	all, err := c.Workers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Value) != 8 {
		t.Errorf("%d workers of every type, want 8", len(all.Value))
	}

	type call struct{ path, query string }
	var got []call
	for _, e := range srv.Log() {
		got = append(got, call{e.Path, e.RawQuery})
		if ua := e.Header.Get("User-Agent"); ua != horde.DefaultUserAgent {
			t.Errorf("User-Agent %q", ua)
		}
		if ca := e.Header.Get("Client-Agent"); ca != horde.ClientAgent {
			t.Errorf("Client-Agent %q", ca)
		}
	}
	want := []call{
		{"/api/v2/status/models", "model_state=known&type=image"},
		{"/api/v2/status/models", "min_count=2&model_state=known&type=text"},
		{"/api/v2/stats/img/models", "model_state=known"},
		{"/api/v2/stats/text/models", "model_state=known"},
		{"/api/v2/workers", "type=image"},
		{"/api/v2/workers", "type=text"},
		{"/api/v2/workers", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("upstream requests:\n got %v\nwant %v", got, want)
	}
}

func TestCopyIsServedFromCacheWhileFresh(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	// Without the stale-while-revalidate window, the caller that finds the
	// copy expired waits for the refresh.
	c.StaleWhileRevalidate = -1
	ctx := context.Background()

	first, err := c.Workers(ctx, horde.Text)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(59 * time.Second)
	again, err := c.Workers(ctx, horde.Text)
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.Requests(); n != 1 {
		t.Errorf("%d upstream requests within 60 s, want 1", n)
	}
	if again.Stale || again.Age != 59*time.Second || !again.FetchedAt.Equal(first.FetchedAt) ||
		!reflect.DeepEqual(again.Value, first.Value) {
		t.Errorf("cached: stale=%v age=%v fetched=%v", again.Stale, again.Age, again.FetchedAt)
	}

	clk.Advance(time.Second)
	refreshed, err := c.Workers(ctx, horde.Text)
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.Requests(); n != 2 {
		t.Errorf("%d upstream requests at 60 s, want 2", n)
	}
	if refreshed.Stale || refreshed.Age != 0 || !refreshed.FetchedAt.Equal(epoch.Add(60*time.Second)) {
		t.Errorf("refreshed: stale=%v age=%v fetched=%v", refreshed.Stale, refreshed.Age, refreshed.FetchedAt)
	}
}

// Every way a refresh can fail serves the last good copy, marked stale.
func TestOutageServesStaleCopy(t *testing.T) {
	malformed := func(b string) func(*testing.T, *fakeHorde, *breaker.Breaker) {
		return func(_ *testing.T, f *fakeHorde, _ *breaker.Breaker) {
			f.outage(faultserver.OK().WithBody([]byte(b)))
		}
	}
	isMalformed := func(err error) bool { return errors.Is(err, horde.ErrMalformed) }
	isStatus := func(code int) func(error) bool {
		return func(err error) bool {
			se, ok := errors.AsType[*httpretry.StatusError](err)
			return ok && se.Response.StatusCode == code
		}
	}
	tests := []struct {
		name     string
		outage   func(*testing.T, *fakeHorde, *breaker.Breaker)
		is       func(error) bool
		requests int64 // upstream requests the failed refresh made; -1: the server is gone
		retried  bool  // whether the refresh waited between three attempts
		failures int   // the breaker's consecutive failures afterwards
	}{
		{
			name: "breaker open",
			outage: func(_ *testing.T, _ *fakeHorde, cb *breaker.Breaker) {
				for range 5 {
					cb.RecordFailure()
				}
			},
			is:       func(err error) bool { return errors.Is(err, breaker.ErrOpen) },
			failures: 5,
		},
		{
			name:     "connection refused",
			outage:   func(_ *testing.T, f *fakeHorde, _ *breaker.Breaker) { f.Close() },
			is:       func(err error) bool { return httpretry.IsTransient(err) && httpretry.Attempts(err) == 3 },
			requests: -1, retried: true, failures: 1,
		},
		{
			name:     "connection reset",
			outage:   func(_ *testing.T, f *fakeHorde, _ *breaker.Breaker) { f.outage(faultserver.ResetBeforeHeaders()) },
			is:       func(err error) bool { return httpretry.IsTransient(err) && httpretry.Attempts(err) == 3 },
			requests: 3, retried: true, failures: 1,
		},
		{
			name:     "503 after retries",
			outage:   func(_ *testing.T, f *fakeHorde, _ *breaker.Breaker) { f.outage(faultserver.Status(503)) },
			is:       isStatus(503),
			requests: 3, retried: true, failures: 1,
		},
		{
			// A 429 says the API is alive but busy: it does not count
			// against the breaker, but it is still no fresh copy.
			name:     "429 after retries",
			outage:   func(_ *testing.T, f *fakeHorde, _ *breaker.Breaker) { f.outage(faultserver.Status(429)) },
			is:       isStatus(429),
			requests: 3, retried: true, failures: 0,
		},
		{
			name:     "404",
			outage:   func(_ *testing.T, f *fakeHorde, _ *breaker.Breaker) { f.outage(faultserver.Status(404)) },
			is:       isStatus(404),
			requests: 1, failures: 0,
		},
		// A 200 the Client cannot use is retried and counts as a breaker
		// failure, like a 5xx.
		{name: "200 with an HTML body", outage: malformed("<html>Service Unavailable</html>"), is: isMalformed, requests: 3, retried: true, failures: 1},
		{name: "200 with a body of the wrong shape", outage: malformed(`{"message":"no"}`), is: isMalformed, requests: 3, retried: true, failures: 1},
		{name: "200 with a null body", outage: malformed("null"), is: isMalformed, requests: 3, retried: true, failures: 1},
		{name: "200 with a truncated JSON body", outage: malformed(`[{"name": "stable_diffusion", "count": 2`), is: isMalformed, requests: 3, retried: true, failures: 1},
		{
			name: "200 cut short by the connection",
			outage: func(_ *testing.T, f *fakeHorde, _ *breaker.Breaker) {
				f.outage(faultserver.TruncatedBody().WithBody(f.fx["status_models_image.json"]).WithPartial(100))
			},
			is:       func(err error) bool { return httpretry.IsTransient(err) && httpretry.Attempts(err) == 3 },
			requests: 3, retried: true, failures: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			srv := startFake(t)
			c, clk, cb := newClient(t, srv.base())
			ctx := context.Background()
			good, err := c.ModelStatus(ctx, horde.StatusQuery{})
			if err != nil {
				t.Fatal(err)
			}

			clk.Advance(expired)
			// net/http replays a request that fails on a reused idle
			// connection once on its own; start the outage on new ones so
			// the count is the retry loop's.
			c.CloseIdleConnections()
			tt.outage(t, srv, cb)
			before := srv.Requests()
			res, err := c.ModelStatus(ctx, horde.StatusQuery{})
			if err != nil {
				t.Fatalf("outage with a cached copy: %v", err)
			}
			if !res.Stale || !reflect.DeepEqual(res.Value, good.Value) || !res.FetchedAt.Equal(good.FetchedAt) {
				t.Errorf("stale=%v fetched=%v value=%+v", res.Stale, res.FetchedAt, res.Value)
			}
			if !tt.is(res.Err) {
				t.Errorf("Err = %v", res.Err)
			}
			// With the clock's timers firing at once, the age is the time
			// moved plus the retry waits: 1-2 s then 1-4 s, jittered.
			waited := res.Age - expired
			if tt.retried && (waited < 2*time.Second || waited >= 6*time.Second) || !tt.retried && waited != 0 {
				t.Errorf("Age = %v: retry waits of %v", res.Age, waited)
			}
			if tt.requests >= 0 {
				if n := srv.Requests() - before; n != tt.requests {
					t.Errorf("%d upstream requests, want %d", n, tt.requests)
				}
			}
			if n := cb.ConsecutiveFailures(); n != tt.failures {
				t.Errorf("breaker failures = %d, want %d", n, tt.failures)
			}
		})
	}
}

func TestOutageWithoutCopyIsDegraded(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	srv.outage(faultserver.Status(503))
	c, _, _ := newClient(t, srv.base())

	res, err := c.ModelStats(context.Background(), horde.StatsQuery{Type: horde.Text})
	if !errors.Is(err, horde.ErrDegraded) {
		t.Fatalf("err = %v, want ErrDegraded", err)
	}
	se, ok := errors.AsType[*httpretry.StatusError](err)
	if !ok || se.Response.StatusCode != 503 {
		t.Errorf("err = %v, want it to wrap the 503", err)
	}
	if !strings.Contains(err.Error(), "v2/stats/text/models") {
		t.Errorf("err = %q, want it to name the endpoint", err)
	}
	if res.Value.Day != nil || res.Stale {
		t.Errorf("result = %+v", res)
	}
}

// Five calls ending on unusable 200s open the breaker as five ending on 500s
// would: the transport must not count those 200s as successes, which would
// reset the count each time.
func TestMalformedBodiesOpenTheBreaker(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	srv.outage(faultserver.OK().WithBody([]byte("<html>oops</html>")))
	c, _, cb := newClient(t, srv.base())
	for range 5 {
		if _, err := c.Workers(context.Background(), horde.Image); !errors.Is(err, horde.ErrMalformed) {
			t.Fatalf("err = %v, want ErrMalformed", err)
		}
	}
	if s := cb.State(); s != breaker.Open {
		t.Errorf("breaker %v after 5 malformed bodies, want open", s)
	}
	if _, err := c.Workers(context.Background(), horde.Image); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("err = %v, want the breaker to refuse", err)
	}
	if n := srv.Requests(); n != 15 {
		t.Errorf("%d upstream requests, want 3 attempts for each of 5 calls", n)
	}
}

func TestInvalidQueryMakesNoRequest(t *testing.T) {
	srv := startFake(t)
	c, _, _ := newClient(t, srv.base())
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"status type":  func() error { _, err := c.ModelStatus(ctx, horde.StatusQuery{Type: "video"}); return err },
		"status state": func() error { _, err := c.ModelStatus(ctx, horde.StatusQuery{State: "famous"}); return err },
		"min_count":    func() error { _, err := c.ModelStatus(ctx, horde.StatusQuery{MinCount: -1}); return err },
		"stats type":   func() error { _, err := c.ModelStats(ctx, horde.StatsQuery{Type: "img"}); return err },
		"workers type": func() error { _, err := c.Workers(ctx, "interrogation"); return err },
		"stats state":  func() error { _, err := c.ModelStats(ctx, horde.StatsQuery{State: "Known"}); return err },
	} {
		if err := call(); !errors.Is(err, horde.ErrInvalidQuery) || errors.Is(err, horde.ErrDegraded) {
			t.Errorf("%s: err = %v, want ErrInvalidQuery", name, err)
		}
	}
	if n := srv.Requests(); n != 0 {
		t.Errorf("%d upstream requests, want 0", n)
	}
}

func TestBaseURL(t *testing.T) {
	tests := []struct {
		name, field, aiHorde, horde, want string
	}{
		{name: "default", want: horde.DefaultBaseURL},
		{name: "HORDE_URL", horde: "http://h.example/api/", want: "http://h.example/api/"},
		{name: "AI_HORDE_URL first", aiHorde: "http://a.example/api", horde: "http://h.example/api/", want: "http://a.example/api/"},
		{name: "field first", field: "https://f.example/x", aiHorde: "http://a.example/api", want: "https://f.example/x/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AI_HORDE_URL", tt.aiHorde)
			t.Setenv("HORDE_URL", tt.horde)
			u, err := (&horde.Client{BaseURL: tt.field}).ResolvedBaseURL()
			if err != nil || u.String() != tt.want {
				t.Errorf("ResolvedBaseURL() = %v, %v; want %s", u, err, tt.want)
			}
		})
	}

	t.Run("bad", func(t *testing.T) {
		for _, bad := range []string{"ftp://aihorde.net/api/", "aihorde.net/api", "http://[::1"} {
			c := &horde.Client{BaseURL: bad}
			if _, err := c.ResolvedBaseURL(); err == nil {
				t.Errorf("%q: no error", bad)
			}
			_, err := c.Workers(context.Background(), horde.Image)
			if err == nil || errors.Is(err, horde.ErrDegraded) {
				t.Errorf("%q: call err = %v, want the configuration error", bad, err)
			}
			if resp := get(horde.NewHandler(c), "/api/v2/workers"); resp.StatusCode != http.StatusInternalServerError {
				t.Errorf("%q: handler answered %d, want 500", bad, resp.StatusCode)
			}
		}
	})

	t.Run("environment reaches the requests", func(t *testing.T) {
		leaktest.Check(t)
		srv := startFake(t)
		t.Setenv("AI_HORDE_URL", srv.base())
		c, _, _ := newClient(t, "")
		if _, err := c.Workers(context.Background(), horde.Text); err != nil {
			t.Fatal(err)
		}
		if n := srv.Requests(); n != 1 {
			t.Errorf("%d requests reached the server named by AI_HORDE_URL", n)
		}
	})
}

// APIBreaker is process-wide, so this is the one test that touches it; it
// leaves it reset.
func TestAPIBreakerIsTheSeedsBreaker(t *testing.T) {
	// It logs its transitions to the default logger.
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(discard)
	defer horde.APIBreaker.Reset()
	if horde.APIBreaker.Name() != "ai_horde" {
		t.Errorf("name %q", horde.APIBreaker.Name())
	}
	for range 4 {
		horde.APIBreaker.RecordFailure()
	}
	if horde.APIBreaker.Degraded() {
		t.Fatal("open after 4 failures")
	}
	horde.APIBreaker.RecordFailure()
	wait, ok := horde.APIBreaker.UntilRetry()
	if !ok || wait <= 119*time.Second || wait > 120*time.Second {
		t.Errorf("after 5 failures: next probe in %v (%v), want 120 s", wait, ok)
	}
	// A Client without a Breaker uses it, as its heartbeat shows.
	resp := get(horde.NewHandler(&horde.Client{}), "/api/heartbeat")
	if b := body(t, resp); !strings.HasPrefix(b, `{"status":"ok","ai_horde":{"degraded":true,"consecutive_failures":5,`) {
		t.Errorf("heartbeat %s", b)
	}
}

func TestObserverSeesTheTransportsEvents(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	srv.outage(faultserver.Status(503))
	c, _, _ := newClient(t, srv.base())
	var kinds []httpretry.EventKind
	c.Observer = func(e httpretry.Event) { kinds = append(kinds, e.Kind) }
	if _, err := c.Workers(context.Background(), horde.Image); !errors.Is(err, horde.ErrDegraded) {
		t.Fatal(err)
	}
	want := []httpretry.EventKind{httpretry.EventAttempt, httpretry.EventRetry, httpretry.EventAttempt,
		httpretry.EventRetry, httpretry.EventAttempt, httpretry.EventGiveUp}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("events %v, want %v", kinds, want)
	}
}
