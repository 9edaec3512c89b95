package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/hordekit/httpretry/internal/leaktest"
)

// workersJSON is one text worker with every field the consumer requires.
const workersJSON = `[{"type":"text","name":"Oakhollow Fimbul","id":"d7f440c5-41d5-4cab-999b-65a674d8ef34","online":true,` +
	`"requests_fulfilled":96012,"kudos_rewards":1147711.0,"kudos_details":{"generated":1021550.0,"uptime":126161},` +
	`"performance":"9.8 tokens per second","threads":1,"uptime":1577010,"maintenance_mode":true,"nsfw":false,` +
	`"trusted":true,"flagged":false,"uncompleted_jobs":402,"models":["koboldcpp/Fimbulvetr-11B-v2"],` +
	`"team":{"name":null,"id":null},"bridge_agent":"KoboldCppEmbedWorker:2:https://github.com/LostRuins/koboldcpp"}]`

var addrRE = regexp.MustCompile(`msg="hordeproxy listening" addr=(\S+)`)

// start runs the command against api and returns the address it serves on
// and a function that stops it, as a signal would, and returns its exit code.
func start(t *testing.T, api string) (addr string, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--listen", "127.0.0.1:0", "--horde-url", api}, pw)
		pw.Close()
	}()
	t.Cleanup(cancel)

	lines := bufio.NewScanner(pr)
	for lines.Scan() {
		if m := addrRE.FindStringSubmatch(lines.Text()); m != nil {
			// Keep reading the log so the command never blocks on it.
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return m[1], func() int { cancel(); return <-code }
		}
	}
	t.Fatalf("hordeproxy did not start (exit %d)", <-code)
	return "", nil
}

func TestServesHeartbeatDataAndMetrics(t *testing.T) {
	leaktest.Check(t)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/workers" || r.URL.RawQuery != "type=text" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, workersJSON)
	}))
	defer api.Close()
	addr, stop := start(t, api.URL+"/api/")

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	fetch := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}

	if resp, b := fetch("/api/heartbeat"); resp.StatusCode != 200 ||
		b != `{"status":"ok","ai_horde":{"degraded":false,"consecutive_failures":0,"seconds_until_retry":null}}` {
		t.Errorf("heartbeat: %d %s", resp.StatusCode, b)
	}
	if resp, b := fetch("/api/v2/workers?type=text"); resp.StatusCode != 200 || b != workersJSON || resp.Header.Get("Age") != "0" {
		t.Errorf("workers: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	resp, b := fetch("/metrics")
	host := strings.TrimPrefix(api.URL, "http://")
	for _, want := range []string{
		`httpretry_attempts_total{host="` + host + `",outcome="success"} 1`,
		`httpretry_breaker_state{breaker="ai_horde"} 0`,
		`go_goroutines `,
	} {
		if resp.StatusCode != 200 || !strings.Contains(b, want) {
			t.Errorf("/metrics (%d) lacks %s", resp.StatusCode, want)
		}
	}

	tr.CloseIdleConnections()
	if c := stop(); c != 0 {
		t.Errorf("exit %d after the signal, want 0", c)
	}
}

func TestBadUsage(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown flag":   {"--port", "80"},
		"argument":       {"serve"},
		"bad horde url":  {"--horde-url", "ftp://aihorde.net/api/"},
		"relative url":   {"--horde-url", "aihorde.net/api"},
		"listen address": {"--listen", "127.0.0.1:http-alt-nope", "--horde-url", "http://127.0.0.1:1/api/"},
	} {
		var stderr strings.Builder
		want := exitUsage
		if name == "listen address" {
			want = exitFailure
		}
		if c := run(context.Background(), args, &stderr); c != want || stderr.Len() == 0 {
			t.Errorf("%s: exit %d, want %d with a message; stderr %q", name, c, want, stderr.String())
		}
	}
	if c := run(context.Background(), []string{"-h"}, io.Discard); c != 0 {
		t.Errorf("-h: exit %d", c)
	}
}
