package main

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

func TestRedisAddressForms(t *testing.T) {
	for _, tt := range []struct {
		in      string
		network string // "" means tcp
		addr    string
		db      int
		user    string
		pass    string
		tls     bool
		shown   string
	}{
		{in: "127.0.0.1:6379", addr: "127.0.0.1:6379", shown: "127.0.0.1:6379"},
		{in: "[::1]:6380", addr: "[::1]:6380", shown: "[::1]:6380"},
		{in: "redis://127.0.0.1:6379/0", network: "tcp", addr: "127.0.0.1:6379", shown: "redis://127.0.0.1:6379/0"},
		{in: "redis://cache.internal/3", network: "tcp", addr: "cache.internal:6379", db: 3, shown: "redis://cache.internal/3"},
		{in: "redis://app:s3cret@cache.internal:6379/1", network: "tcp", addr: "cache.internal:6379", db: 1,
			user: "app", pass: "s3cret", shown: "redis://app:xxxxx@cache.internal:6379/1"},
		{in: "rediss://:s3cret@cache.example.com:6380/2", network: "tcp", addr: "cache.example.com:6380", db: 2,
			pass: "s3cret", tls: true, shown: "rediss://:xxxxx@cache.example.com:6380/2"},
		{in: "unix:///run/redis/redis.sock?db=4", network: "unix", addr: "/run/redis/redis.sock", db: 4,
			shown: "unix:///run/redis/redis.sock?db=4"},
	} {
		var c config
		if err := setRedis(&c, tt.in); err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		o := c.redis
		if o.Network != tt.network || o.Addr != tt.addr || o.DB != tt.db || o.Username != tt.user || o.Password != tt.pass ||
			(o.TLSConfig != nil) != tt.tls || !o.ContextTimeoutEnabled || c.redisShown != tt.shown {
			t.Errorf("%s: network %q addr %q db %d user %q pass %q tls %v context timeouts %v shown %q",
				tt.in, o.Network, o.Addr, o.DB, o.Username, o.Password, o.TLSConfig != nil, o.ContextTimeoutEnabled, c.redisShown)
		}
	}
	for _, bad := range []string{"localhost", "redis", "http://127.0.0.1:6379", "127.0.0.1:0", "127.0.0.1:port",
		"user:pw@127.0.0.1:6379", "redis://127.0.0.1:6379/0/1", "redis://127.0.0.1:6379/zero", "unix://",
		"redis://:pw@[::1", "redis://127.0.0.1:6379/0?pool_size=many"} {
		var c config
		err := setRedis(&c, bad)
		if err == nil {
			t.Errorf("%s: accepted", bad)
		} else if strings.Contains(err.Error(), "pw@") {
			t.Errorf("%s: the error repeats the password: %v", bad, err)
		}
	}
}

// Replicas given one Redis in any of its address forms share one cache:
// host:port (the old form), the redis:// URL the Python original's
// settings use, REDIS_URL, and a unix socket. A URL naming another database
// does not share it, which shows the database number is honoured.
func TestReplicasShareOneRedisCache(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	api := startAPI(t)
	sock := unixForwarder(t, srv.Addr)

	first := start(t, "--horde-url", api.base(), "--redis", srv.Addr)
	if resp, b := first.fetch(t, "/api/v2/workers?type=text"); resp.StatusCode != 200 || b != string(api.workers) {
		t.Fatalf("first replica: %d %.200s", resp.StatusCode, b)
	}
	if n := api.requests.Load(); n != 1 {
		t.Fatalf("%d API requests, want 1", n)
	}

	for _, form := range []struct {
		name string
		args []string
		env  string
	}{
		{name: "redis:// URL", args: []string{"--redis", "redis://" + srv.Addr + "/0"}},
		{name: "REDIS_URL", env: "redis://" + srv.Addr},
		{name: "unix:// URL", args: []string{"--redis", "unix://" + sock}},
	} {
		t.Run(form.name, func(t *testing.T) {
			if form.env != "" {
				t.Setenv("REDIS_URL", form.env)
			}
			p := start(t, append([]string{"--horde-url", api.base()}, form.args...)...)
			resp, b := p.fetch(t, "/api/v2/workers?type=text")
			if resp.StatusCode != 200 || b != string(api.workers) || resp.Header.Get("X-Horde-Stale") != "" {
				t.Errorf("%d %v %.200s", resp.StatusCode, resp.Header, b)
			}
			if n := api.requests.Load(); n != 1 {
				t.Errorf("%d API requests, want still 1: the copy comes from Redis", n)
			}
			if c := p.stop(); c != 0 {
				t.Errorf("exit %d", c)
			}
		})
	}

	other := start(t, "--horde-url", api.base(), "--redis", "redis://"+srv.Addr+"/1")
	if resp, _ := other.fetch(t, "/api/v2/workers?type=text"); resp.StatusCode != 200 || api.requests.Load() != 2 {
		t.Errorf("database 1: %d after %d API requests, want its own fetch (2)", resp.StatusCode, api.requests.Load())
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 1})
	defer rdb.Close()
	if n, err := rdb.Exists(t.Context(), "httpretry:horde:v2/workers?type=text").Result(); n != 1 || err != nil {
		t.Errorf("the copy in database 1: exists %d, %v", n, err)
	}
	for _, p := range []proxy{first, other} {
		if c := p.stop(); c != 0 {
			t.Errorf("exit %d", c)
		}
	}
}

// unixForwarder listens on a unix socket and forwards each connection to
// the TCP address of the test's redis-server, so that a unix:// URL reaches
// the same server. It returns the socket's path.
func unixForwarder(t *testing.T, tcpAddr string) string {
	t.Helper()
	// Socket paths are limited to about 100 bytes: keep it short.
	dir, err := os.MkdirTemp("", "hp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "redis.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			out, err := net.Dial("tcp", tcpAddr)
			if err != nil {
				in.Close()
				continue
			}
			track(in)
			track(out)
			wg.Go(func() { io.Copy(out, in); out.Close() })
			wg.Go(func() { io.Copy(in, out); in.Close() })
		}
	})
	return path
}
