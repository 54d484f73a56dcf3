package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh/meshtest"
)

// Benchmarks of the paths through the mesh (issue 10), with the real
// binaries as separate processes, file to file on tmpfs (/dev/shm), each
// rate compared with raw loopback TCP file to file measured in the same
// run. Run by scripts/bench; `go test -run` never starts them.
//
// Relays listen on TCP and QUIC, as they do by default, so the transport
// the mesh picks between them is the one a deployment gets.

// relayP2P is what the benchmarks' relays and rendezvous listen on: the
// default transports (mesh.DefaultListenAddrs), on loopback.
const relayP2P = "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1"

// benchSizeEnv returns the bytes moved per measurement: MESHUP_BENCH_SIZE,
// or def.
func benchSizeEnv(b *testing.B, name string, def int64) int64 {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		b.Fatalf("%s: %q is not a size in bytes", name, s)
	}
	return v
}

// benchMesh is a rendezvous and relays, each a process of the real
// binary, for one benchmark.
type benchMesh struct {
	b      *testing.B
	bin    string // directory of the binaries
	url    string // the rendezvous's base URL
	rdv    *exec.Cmd
	relays []benchRelay // in the order they started
}

type benchRelay struct {
	id    string
	cmd   *exec.Cmd
	debug string // host:port of its /metrics
}

// startBenchMesh starts a rendezvous and n relays. With tunnel, the
// rendezvous offers no STUN, so the relays cannot tell that they are
// reachable, do not claim to be public, and are reached through the
// rendezvous's tunnel; without, they learn with STUN that they are public
// and are reached directly.
func startBenchMesh(b *testing.B, n int, tunnel bool, relayArgs ...string) *benchMesh {
	dir, err := binaries()
	if err != nil {
		b.Fatal(err)
	}
	m := &benchMesh{b: b, bin: dir}
	port := freePortB(b)
	m.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	stun := "127.0.0.1:0"
	if tunnel {
		stun = "off"
	}
	m.rdv = startB(b, filepath.Join(dir, "rendezvous"), "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--p2p", relayP2P, "--public-url", m.url, "--stun", stun, "--allow-private-addrs",
		"--debug-addr", fmt.Sprintf("127.0.0.1:%d", freePortB(b)))
	meshtest.Eventually(b, 20*time.Second, "rendezvous", func() bool { return liveRelays(m.url) != nil })
	for i := range n {
		debug := fmt.Sprintf("127.0.0.1:%d", freePortB(b))
		args := append([]string{"--rendezvous", m.url, "--http", "127.0.0.1:0", "--p2p", relayP2P,
			"--allow-private-addrs", "--debug-addr", debug}, relayArgs...)
		cmd := startB(b, filepath.Join(dir, "relay"), args...)
		var id string
		meshtest.Eventually(b, 20*time.Second, "relay to register", func() bool {
			for r := range liveRelays(m.url) {
				if !slices.ContainsFunc(m.relays, func(x benchRelay) bool { return x.id == r }) {
					id = r
				}
			}
			return len(liveRelays(m.url)) == i+1 && id != ""
		})
		m.relays = append(m.relays, benchRelay{id: id, cmd: cmd, debug: debug})
	}
	return m
}

// send publishes file with meshup send and returns its share link and the
// process, which runs for the benchmark's life.
func (m *benchMesh) send(file string, encrypted bool, via string) (string, *exec.Cmd) {
	args := []string{"send", "--rendezvous", m.url}
	if !encrypted {
		args = append(args, "--plain", "--volunteers")
	}
	if via != "" {
		args = append(args, "--via", via)
	}
	return sendB(m.b, filepath.Join(m.bin, "meshup"), append(args, file)...)
}

// exitURL returns where the rendezvous sends a consumer of link (pinned
// to relay via when set): a relay's own URL or the tunnel.
func (m *benchMesh) exitURL(link, via string) string {
	u, err := url.Parse(link)
	if err != nil {
		m.b.Fatal(err)
	}
	id := u.Path[strings.LastIndexByte(u.Path, '/')+1:]
	q := ""
	if via != "" {
		q = "?via=" + url.QueryEscape(via)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Head(m.url + "/v1/items/" + id + q)
	if err != nil {
		m.b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect {
		m.b.Fatalf("item %s: %s, want a redirect to an exit relay", id, resp.Status)
	}
	return resp.Header.Get("Location")
}

// get runs meshup get of link (through exit relay via when set) into dst,
// checks the file, and returns the rate in bytes per second and the CPU
// time meshup get used.
func (m *benchMesh) get(link, via, dst string, size int64, sum []byte) (rate float64, cpu time.Duration) {
	os.Remove(dst)
	args := []string{"get", "-o", dst}
	if via != "" {
		args = append(args, "--via", via)
	}
	cmd := exec.Command(filepath.Join(m.bin, "meshup"), append(args, link)...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	el := time.Since(start)
	if err != nil {
		m.b.Fatalf("meshup get %v: %v\n%s", args, err, out)
	}
	check(m.b, dst, size, sum)
	os.Remove(dst)
	return float64(size) / el.Seconds(), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// procCPU returns the CPU time (user and system) process pid has used.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from after it.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procRSS returns the resident set size of process pid in bytes.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuMeter measures the CPU time named processes use between start and
// stop.
type cpuMeter struct {
	names []string
	pids  []int
	at    []time.Duration
}

func newCPUMeter() *cpuMeter { return &cpuMeter{} }

func (c *cpuMeter) add(name string, cmd *exec.Cmd) *cpuMeter {
	c.names = append(c.names, name)
	c.pids = append(c.pids, cmd.Process.Pid)
	return c
}

func (c *cpuMeter) start() {
	c.at = c.at[:0]
	for _, p := range c.pids {
		c.at = append(c.at, procCPU(p))
	}
}

// stop returns "name N.NN" pairs of CPU seconds per GiB moved.
func (c *cpuMeter) stop(size int64, extra ...string) string {
	gib := float64(size) / (1 << 30)
	var parts []string
	for i, p := range c.pids {
		parts = append(parts, fmt.Sprintf("%s %.2f", c.names[i], (procCPU(p)-c.at[i]).Seconds()/gib))
	}
	return strings.Join(append(parts, extra...), ", ")
}

// loadAvg returns the 1, 5 and 15 minute load averages as printed by
// uptime: other work on the machine slows every rate.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// pathResult is the rates of one path, plain and encrypted, summed over
// rounds.
type pathResult struct {
	name        string
	plain, encr float64
	cpu         string // CPU seconds per GiB of each process, last plain round
}

// BenchmarkMeshPaths measures, in one run, file to file on tmpfs with the
// real binaries as separate processes, plain (--plain) and end-to-end
// encrypted:
//
//   - raw: loopback TCP, a Go copy file -> socket -> file;
//   - (a) one relay hop: meshup send -> relay -> meshup get;
//   - (b) two relays over the mesh: meshup send --via A -> relay A
//     -> libp2p stream -> relay B -> meshup get --via B;
//   - (c) a relay reached through the rendezvous tunnel: a relay that does
//     not claim to be public; meshup send pushes to it through the
//     tunnel and meshup get reads from it through the tunnel.
//
// It prints each rate with its ratio to raw (issue 10 aims at (a) >= 0.6,
// (b) >= 0.5, (c) >= 0.35) and the CPU seconds per GiB each process
// used, which, unlike rates, barely depend on what else the machine runs.
func BenchmarkMeshPaths(b *testing.B) {
	size := benchSizeEnv(b, "MESHUP_BENCH_SIZE", cliBenchSize)
	shm, err := os.MkdirTemp("/dev/shm", "meshup-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	src := filepath.Join(shm, "src.bin")
	dst := filepath.Join(shm, "dst.bin")
	sum := writeRandom(b, src, size)

	direct := startBenchMesh(b, 2, false)
	relayA, relayB := direct.relays[0], direct.relays[1]
	tunnel := startBenchMesh(b, 1, true)
	relayT := tunnel.relays[0]

	type item struct{ plain, encr string }
	var viaA, viaT item
	var sendA, sendT *exec.Cmd
	viaA.plain, sendA = direct.send(src, false, relayA.id)
	viaA.encr, _ = direct.send(src, true, relayA.id)
	viaT.plain, sendT = tunnel.send(src, false, "")
	viaT.encr, _ = tunnel.send(src, true, "")
	if u := direct.exitURL(viaA.plain, relayA.id); strings.Contains(u, "/v1/relays/") {
		b.Fatalf("the public relay is tunnelled: %s", u)
	}
	if u := tunnel.exitURL(viaT.plain, ""); !strings.Contains(u, "/v1/relays/") {
		b.Fatalf("the relay that is not public is reached directly, not through the tunnel: %s", u)
	}

	paths := []struct {
		name string
		m    *benchMesh
		it   *item
		via  string
		cpu  *cpuMeter
	}{
		{"(a) one relay hop", direct, &viaA, relayA.id, newCPUMeter().add("send", sendA).add("relay", relayA.cmd)},
		{"(b) two relays over the mesh", direct, &viaA, relayB.id, newCPUMeter().add("send", sendA).add("entry", relayA.cmd).add("exit", relayB.cmd)},
		{"(c) relay through the tunnel", tunnel, &viaT, "", newCPUMeter().add("send", sendT).add("rendezvous", tunnel.rdv).add("relay", relayT.cmd)},
	}
	res := make([]pathResult, len(paths))
	var raw float64
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		raw += rawTCPFile(b, src, dst, size)
		check(b, dst, size, sum)
		for i, p := range paths {
			res[i].name = p.name
			p.cpu.start()
			r, getCPU := p.m.get(p.it.plain, p.via, dst, size, sum)
			res[i].cpu = p.cpu.stop(size, fmt.Sprintf("get %.2f", getCPU.Seconds()/(float64(size)/(1<<30))))
			res[i].plain += r
			r, _ = p.m.get(p.it.encr, p.via, dst, size, sum)
			res[i].encr += r
		}
	}
	b.StopTimer()
	n := float64(b.N)
	raw /= n
	b.ReportMetric(raw/1e6, "raw_MB/s")
	fmt.Printf("mesh paths, file->file %d MiB, separate processes, load average %s: raw loopback TCP %.0f MB/s\n", size>>20, loadAvg(), raw/1e6)
	for i, r := range res {
		plain, encr := r.plain/n, r.encr/n
		b.ReportMetric(plain/raw, fmt.Sprintf("%c_plain/raw", 'a'+i))
		b.ReportMetric(encr/raw, fmt.Sprintf("%c_enc/raw", 'a'+i))
		fmt.Printf("  %-30s plain %5.0f MB/s %.2fx raw | encrypted %5.0f MB/s %.2fx raw | CPU s/GiB (plain): %s\n",
			r.name, plain/1e6, plain/raw, encr/1e6, encr/raw, r.cpu)
	}
}

// BenchmarkMeshSpread reads one item through meshes of one, two and three
// relays (MESHUP_BENCH_RELAYS=N for 1..N), publisher and consumer as
// separate processes, and prints the rate for each, with the part bytes
// each relay took in (from the publisher and from entry relays) and gave
// out (to the consumer and to the exit relay): the exit relay takes in and
// gives out the whole item; when the scheduler spreads a transfer over
// several entry relays, the others show their share in and out, and the
// rate grows with the relays.
func BenchmarkMeshSpread(b *testing.B) {
	size := benchSizeEnv(b, "MESHUP_BENCH_SIZE", cliBenchSize)
	maxRelays := int(benchSizeEnv(b, "MESHUP_BENCH_RELAYS", 3))
	shm, err := os.MkdirTemp("/dev/shm", "meshup-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	src := filepath.Join(shm, "src.bin")
	dst := filepath.Join(shm, "dst.bin")
	sum := writeRandom(b, src, size)

	b.SetBytes(size)
	b.ResetTimer()
	raw := 0.0
	for range b.N {
		raw += rawTCPFile(b, src, dst, size)
	}
	raw /= float64(b.N)
	fmt.Printf("one item over 1..%d relays, file->file %d MiB, plain, load average %s: raw loopback TCP %.0f MB/s\n", maxRelays, size>>20, loadAvg(), raw/1e6)
	for n := 1; n <= maxRelays; n++ {
		m := startBenchMesh(b, n, false)
		link, _ := m.send(src, false, "")
		inBefore := m.relayCounters("meshup_relay_bytes_in_total")
		outBefore := m.relayCounters("meshup_relay_bytes_out_total")
		rate := 0.0
		for range b.N {
			r, _ := m.get(link, "", dst, size, sum)
			rate += r
		}
		rate /= float64(b.N)
		in := m.relayCounters("meshup_relay_bytes_in_total")
		out := m.relayCounters("meshup_relay_bytes_out_total")
		var flows []string
		for i := range in {
			flows = append(flows, fmt.Sprintf("%.0f/%.0f", (in[i]-inBefore[i])/float64(b.N)/1e6, (out[i]-outBefore[i])/float64(b.N)/1e6))
		}
		b.ReportMetric(rate/1e6, fmt.Sprintf("relays%d_MB/s", n))
		fmt.Printf("  %d relay(s): %5.0f MB/s %.2fx raw | MB in/out per relay per read: %s\n", n, rate/1e6, rate/raw, strings.Join(flows, " "))
		m.stop()
	}
}

// relayCounters reads counter name from every relay's /metrics.
func (m *benchMesh) relayCounters(name string) []float64 {
	out := make([]float64, len(m.relays))
	for i, r := range m.relays {
		out[i] = memMetrics(r.debug)[name]
	}
	return out
}

// stop kills the mesh's processes before the benchmark ends.
func (m *benchMesh) stop() {
	for _, r := range m.relays {
		r.cmd.Process.Kill()
	}
	m.rdv.Process.Kill()
}

// BenchmarkRelayRSS moves MESHUP_BENCH_RSS_SIZE bytes (default 10 GiB)
// through two relays (meshup send --via A, meshup get --via B -o -), and
// samples the resident memory of both relays every 500 ms. It prints
// each relay's smallest and largest RSS after the first part, next to the
// relay's part memory budget: the RSS must stay flat, within the budget,
// however long the transfer. It fails if a relay grows by more than its
// budget. The source is a sparse file (zeros that cost no memory), sent
// plain.
func BenchmarkRelayRSS(b *testing.B) {
	size := benchSizeEnv(b, "MESHUP_BENCH_RSS_SIZE", 10<<30)
	const budget = 256 << 20 // relay.DefaultBudget, passed explicitly below
	shm, err := os.MkdirTemp("/dev/shm", "meshup-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	src := filepath.Join(shm, "sparse.bin")
	if err := os.WriteFile(src, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(src, size); err != nil {
		b.Fatal(err)
	}

	m := startBenchMesh(b, 2, false, "--budget", strconv.Itoa(budget))
	entry, exit := m.relays[0], m.relays[1]
	link, _ := m.send(src, false, entry.id)

	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		type sample struct{ entry, exit int64 }
		var (
			mu      sync.Mutex
			samples []sample
		)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					s := sample{procRSS(entry.cmd.Process.Pid), procRSS(exit.cmd.Process.Pid)}
					mu.Lock()
					samples = append(samples, s)
					mu.Unlock()
				}
			}
		}()
		cmd := exec.Command(filepath.Join(m.bin, "meshup"), "get", "--via", exit.id, "-o", "-", link)
		zw := &zeroWriter{}
		cmd.Stdout = zw
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		el := time.Since(start)
		close(stop)
		<-done
		if err != nil || zw.n != size || zw.nonZero {
			b.Fatalf("meshup get: %v, %d bytes (want %d), non-zero bytes %v\n%s", err, zw.n, size, zw.nonZero, stderr.String())
		}
		// The first seconds fill the windows, pools and the runtime's
		// heap: flat means after that.
		skip := min(len(samples)/10, 4)
		var en, ex []int64
		for _, s := range samples[skip:] {
			en, ex = append(en, s.entry), append(ex, s.exit)
		}
		if len(en) == 0 {
			b.Fatal("no RSS samples")
		}
		sort.Slice(en, func(i, j int) bool { return en[i] < en[j] })
		sort.Slice(ex, func(i, j int) bool { return ex[i] < ex[j] })
		fmt.Printf("relay RSS during %d MiB through two relays (%.0f MB/s, %d samples, load average %s): entry min %d MiB max %d MiB, exit min %d MiB max %d MiB; budget %d MiB\n",
			size>>20, float64(size)/el.Seconds()/1e6, len(en), loadAvg(), en[0]>>20, en[len(en)-1]>>20, ex[0]>>20, ex[len(ex)-1]>>20, budget>>20)
		b.ReportMetric(float64(en[len(en)-1])/(1<<20), "entry_max_MiB")
		b.ReportMetric(float64(ex[len(ex)-1])/(1<<20), "exit_max_MiB")
		for _, r := range []struct {
			name string
			rss  []int64
		}{{"entry", en}, {"exit", ex}} {
			if grew := r.rss[len(r.rss)-1] - r.rss[0]; grew > budget {
				b.Errorf("%s relay RSS grew by %d MiB during the transfer, more than its %d MiB budget", r.name, grew>>20, budget>>20)
			}
		}
	}
}

// zeroWriter counts the bytes written to it and notes any that is not
// zero.
type zeroWriter struct {
	n       int64
	nonZero bool
}

var zeros = make([]byte, 256<<10)

func (z *zeroWriter) Write(p []byte) (int, error) {
	for rest := p; len(rest) > 0; {
		k := min(len(rest), len(zeros))
		if !bytes.Equal(rest[:k], zeros[:k]) {
			z.nonZero = true
		}
		rest = rest[k:]
	}
	z.n += int64(len(p))
	return len(p), nil
}

// sendB runs meshup send and returns the first line it prints (the share
// link) and the process, which runs for the benchmark's life.
func sendB(b *testing.B, bin string, args ...string) (string, *exec.Cmd) {
	pr, pw := io.Pipe()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = pw
	log := &lockedBuffer{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var s strings.Builder
		for {
			n, err := pr.Read(buf)
			s.Write(buf[:n])
			if i := strings.IndexByte(s.String(), '\n'); i >= 0 {
				line <- s.String()[:i]
				io.Copy(io.Discard, pr)
				return
			}
			if err != nil {
				close(line)
				return
			}
		}
	}()
	select {
	case l, ok := <-line:
		if !ok {
			b.Fatalf("meshup send printed nothing:\n%s", log.String())
		}
		return l, cmd
	case <-time.After(30 * time.Second):
		b.Fatalf("meshup send printed no link:\n%s", log.String())
	}
	return "", nil
}
