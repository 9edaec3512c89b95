package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterTimeout bounds how long a cluster may take to form or to fail over.
// It is a ceiling for a slow machine, never a timing assertion.
const clusterTimeout = 30 * time.Second

// NodeTimeout is the clusters' cluster-node-timeout: how long a master may
// be unreachable before the others mark it failed and a replica takes over.
// Short, so that a failover in a test takes about a second.
const NodeTimeout = 500 * time.Millisecond

// Cluster is a running Redis Cluster of redis-server processes on loopback.
// Its methods are meant to be called from the test's goroutine.
type Cluster struct {
	// Nodes are every node, masters and replicas, in start order.
	Nodes []*Server

	t   testing.TB
	cli string
}

// StartCluster starts masters x (1 + replicas) redis-server processes with
// cluster mode on, joins them with "redis-cli --cluster create" (the slots
// split evenly among the masters, each master with its replicas), and
// returns once every node reports the cluster ok and every replica is in
// sync with its master. The nodes are stopped when the test ends. It needs
// redis-server and redis-cli, and skips (fails in CI) without them, as
// Start does.
func StartCluster(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	bin := lookPath(t, "redis-server")
	cli := lookPath(t, "redis-cli")
	c := &Cluster{t: t, cli: cli}
	for range masters * (1 + replicas) {
		dir := t.TempDir()
		c.Nodes = append(c.Nodes, start(t, bin, dir,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds())),
			// A replica may take over however long it was cut off: the
			// tests crash masters on purpose and want the failover.
			"--cluster-replica-validity-factor", "0",
			// A master waits this long for more replicas before a full sync
			// (5 s by default): start at once.
			"--repl-diskless-sync-delay", "0",
		))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitHealthy(c.Nodes)
	return c
}

// Addrs are every node's address, for redis.ClusterOptions.Addrs.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// MasterFor returns the node that serves key's slot now.
func (c *Cluster) MasterFor(key string) *Server {
	c.t.Helper()
	slot := c.slot(key)
	for _, n := range c.up() {
		nodes, err := n.Do("CLUSTER", "NODES")
		if err != nil {
			continue
		}
		if addr := owner(nodes, slot); addr != "" {
			return c.node(addr)
		}
	}
	c.t.Fatalf("redistest: no node serves slot %d of %q", slot, key)
	return nil
}

// KillMaster crashes the master that serves key's slot (SIGKILL) and waits
// until one of its replicas has taken over and every node still running
// reports the cluster ok. It returns the old and the new master, and how
// long the takeover took after the kill, as seen from the nodes.
func (c *Cluster) KillMaster(key string) (old, promoted *Server, took time.Duration) {
	c.t.Helper()
	return c.failMaster(key, (*Server).Stop)
}

// HangMaster freezes the master that serves key's slot (SIGSTOP): its
// connections stay open and nothing is answered, as with a master stuck or
// cut off by the network. It waits, as KillMaster does, until a replica has
// taken over. The frozen node stays frozen; Rejoin brings it back.
func (c *Cluster) HangMaster(key string) (old, promoted *Server, took time.Duration) {
	c.t.Helper()
	return c.failMaster(key, (*Server).Pause)
}

// Rejoin brings back a master that KillMaster or HangMaster failed over: a
// killed one restarts (empty, with its node identity), a frozen one resumes.
// Either learns that it was replaced and becomes a replica of the node that
// took over. Rejoin returns once the whole cluster is healthy again.
func (c *Cluster) Rejoin(old *Server) {
	c.t.Helper()
	old.mu.Lock()
	paused, running := old.paused, old.proc != nil
	old.mu.Unlock()
	switch {
	case paused:
		old.Resume()
	case !running:
		old.Restart()
	}
	c.waitHealthy(c.Nodes)
}

func (c *Cluster) failMaster(key string, fail func(*Server)) (old, promoted *Server, took time.Duration) {
	c.t.Helper()
	old = c.MasterFor(key)
	slot := c.slot(key)
	killed := time.Now()
	fail(old)
	deadline := killed.Add(clusterTimeout)
	for {
		for _, n := range c.up() {
			nodes, err := n.Do("CLUSTER", "NODES")
			if err != nil {
				continue
			}
			if addr := owner(nodes, slot); addr != "" && addr != old.Addr {
				promoted = c.node(addr)
				took = time.Since(killed)
				c.waitHealthy(c.up())
				return old, promoted, took
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: no replica took over slot %d within %v of failing %s", slot, clusterTimeout, old.Addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slot asks a node for key's hash slot.
func (c *Cluster) slot(key string) int {
	c.t.Helper()
	for _, n := range c.up() {
		v, err := n.Do("CLUSTER", "KEYSLOT", key)
		if err == nil {
			slot, err := strconv.Atoi(v)
			if err == nil {
				return slot
			}
		}
	}
	c.t.Fatalf("redistest: no node answers CLUSTER KEYSLOT")
	return 0
}

// up are the nodes running now, and not frozen.
func (c *Cluster) up() []*Server {
	var up []*Server
	for _, n := range c.Nodes {
		n.mu.Lock()
		running := n.proc != nil && !n.paused
		n.mu.Unlock()
		if running {
			up = append(up, n)
		}
	}
	return up
}

func (c *Cluster) node(addr string) *Server {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	c.t.Fatalf("redistest: %s is not a node of this cluster", addr)
	return nil
}

// waitHealthy waits until each of nodes reports cluster_state:ok, sees every
// slot served by a master it does not consider failed, and, if it is a
// replica, has its link to its master up.
func (c *Cluster) waitHealthy(nodes []*Server) {
	c.t.Helper()
	deadline := time.Now().Add(clusterTimeout)
	for {
		var why string
		for _, n := range nodes {
			if why = healthy(n); why != "" {
				break
			}
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: cluster not healthy within %v: %s", clusterTimeout, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// healthy says what is wrong with n's view of the cluster, or "".
func healthy(n *Server) string {
	info, err := n.Do("CLUSTER", "INFO")
	if err != nil {
		return fmt.Sprintf("%s: %v", n.Addr, err)
	}
	if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
		return n.Addr + ": cluster not ok"
	}
	nodes, err := n.Do("CLUSTER", "NODES")
	if err != nil {
		return fmt.Sprintf("%s: %v", n.Addr, err)
	}
	for _, line := range strings.Split(nodes, "\n") {
		// id addr flags master ping pong epoch link slot...
		f := strings.Fields(line)
		if len(f) > 8 && strings.Contains(f[2], "master") && strings.Contains(f[2], "fail") {
			return n.Addr + ": sees a failed master that still serves slots: " + line
		}
	}
	repl, err := n.Do("INFO", "replication")
	if err != nil {
		return fmt.Sprintf("%s: %v", n.Addr, err)
	}
	if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
		return n.Addr + ": replica not in sync"
	}
	return ""
}

// owner finds, in CLUSTER NODES output, the address of the healthy master
// serving slot, or "".
func owner(nodes string, slot int) string {
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, isRange := strings.Cut(r, "-")
			from, err1 := strconv.Atoi(lo)
			to := from
			var err2 error
			if isRange {
				to, err2 = strconv.Atoi(hi)
			}
			if err1 == nil && err2 == nil && from <= slot && slot <= to {
				addr, _, _ := strings.Cut(f[1], "@") // "127.0.0.1:port@busport"
				return addr
			}
		}
	}
	return ""
}

// Do sends one command to the server and returns its reply: a simple or
// bulk string as is, an integer in decimal, an array's elements one per
// line. A Redis error reply is returned as an error. It is for test setup
// and inspection; tests of Redis-backed code use a real client.
func (s *Server) Do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		elems := make([]string, 0, max(n, 0))
		for range n {
			e, err := readReply(rd)
			if err != nil {
				return "", err
			}
			elems = append(elems, e)
		}
		return strings.Join(elems, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
