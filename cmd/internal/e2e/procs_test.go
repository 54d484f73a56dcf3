package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// binaries builds the three commands once per test binary run.
var binaries = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "meshup-e2e-bin-")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/meshup/meshup/cmd/rendezvous", "github.com/meshup/meshup/cmd/relay", "github.com/meshup/meshup/cmd/meshup")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %w", err)
	}
	return dir, nil
})

// noatimeWrap is the command that runs a binary in a mount namespace of
// its own with / remounted noatime, or nil when that cannot be done here
// (not root, no unshare). The "nothing on disk" checks read
// /proc/PID/io write_bytes, which counts 4096 bytes when a read updates an
// old atime (relatime: the first read of /etc/resolv.conf or
// /usr/share/mime/globs2 on a fresh machine); without atime updates only
// real writes count. The binary keeps the pid: unshare and sh exec it.
var noatimeWrap = sync.OnceValue(func() []string {
	wrap := []string{"unshare", "-m", "--", "sh", "-c", `mount -o remount,bind,noatime / && exec "$0" "$@"`}
	if os.Geteuid() != 0 || exec.Command(wrap[0], append(wrap[1:], "true")...).Run() != nil {
		return nil
	}
	return wrap
})

// proc is a running command whose stderr is kept for failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs binary name with args; it is killed at the end of the test.
func start(t *testing.T, name string, stdout io.Writer, args ...string) *proc {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, log: &lockedBuffer{}, done: make(chan struct{})}
	argv := slices.Concat(noatimeWrap(), []string{filepath.Join(dir, name)}, args)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stderr = p.log
	p.cmd.Stdout = stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s %v stderr:\n%s", name, args, p.log.String())
		}
	})
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// writeBytes returns the bytes the process has caused to be written to
// storage (/proc/PID/io write_bytes).
func writeBytes(t *testing.T, pid int) int64 {
	t.Helper()
	return procField(t, fmt.Sprintf("/proc/%d/io", pid), "write_bytes:")
}

// rssPeak returns the process's peak resident set size in bytes.
func rssPeak(t *testing.T, pid int) int64 {
	t.Helper()
	return procField(t, fmt.Sprintf("/proc/%d/status", pid), "VmHWM:") * 1024
}

func rss(t *testing.T, pid int) int64 {
	t.Helper()
	return procField(t, fmt.Sprintf("/proc/%d/status", pid), "VmRSS:") * 1024
}

func procField(t *testing.T, file, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			v, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatalf("%s %s: %v", file, field, err)
			}
			return v
		}
	}
	t.Fatalf("%s has no %s", file, field)
	return 0
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond every 50ms until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type rdvStatus struct {
	Relays []struct {
		ID      string `json:"id"`
		HTTPURL string `json:"http_url"`
		Alive   bool   `json:"alive"`
	} `json:"relays"`
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// liveRelays returns the ids of the relays the rendezvous would use.
func liveRelays(base string) map[string]string {
	var st rdvStatus
	if getJSON(base+"/v1/status", &st) != nil {
		return nil
	}
	out := map[string]string{}
	for _, r := range st.Relays {
		if r.Alive {
			out[r.ID] = r.HTTPURL
		}
	}
	return out
}

// sender runs `meshup send [flags] FILE` and returns the process and its
// two URLs.
func sender(t *testing.T, rdv, file string, flags ...string) (p *proc, share, download string) {
	t.Helper()
	pr, pw := io.Pipe()
	args := append([]string{"send", "--rendezvous", rdv}, flags...)
	p = start(t, "meshup", pw, append(args, file)...)
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, dst := range []*string{&share, &download} {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("meshup send exited early:\n%s", p.log.String())
			}
			*dst = l
		case <-ctx.Done():
			t.Fatalf("meshup send printed no URLs:\n%s", p.log.String())
		}
	}
	return p, share, download
}
