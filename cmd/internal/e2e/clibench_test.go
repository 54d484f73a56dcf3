package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"github.com/meshup/meshup/mesh/meshtest"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// cliBenchSize is the file moved per measurement by BenchmarkCLIHop;
// MESHUP_BENCH_SIZE overrides it.
const cliBenchSize = 1 << 30

// BenchmarkCLIHop measures, in one run, file to file on tmpfs (/dev/shm):
//
//   - raw: loopback TCP, a Go copy from the source file into a socket and
//     from the socket into the destination file;
//   - plain: meshup send --plain FILE -> relay -> meshup get -o FILE;
//   - encrypted: meshup send FILE -> relay -> meshup get -o FILE (e2e1);
//
// with the rendezvous, the relay and both meshup commands as separate
// processes of the real binaries. It reports the rates and the ratios
// encrypted/plain and encrypted/raw (issue 9 aims at >= 0.8 and >= 0.75).
func BenchmarkCLIHop(b *testing.B) {
	size := benchSizeEnv(b, "MESHUP_BENCH_SIZE", cliBenchSize)
	shm, err := os.MkdirTemp("/dev/shm", "meshup-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	src := filepath.Join(shm, "src.bin")
	dst := filepath.Join(shm, "dst.bin")
	sum := writeRandom(b, src, size)

	dir, err := binaries()
	if err != nil {
		b.Fatal(err)
	}
	rdv := startBenchRendezvous(b, dir)
	startB(b, filepath.Join(dir, "relay"), "--rendezvous", rdv, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs")
	meshtest.Eventually(b, 20*time.Second, "relay to register", func() bool { return len(liveRelays(rdv)) == 1 })

	links := map[bool]string{}
	for _, enc := range []bool{false, true} {
		args := []string{"send", "--rendezvous", rdv}
		if !enc {
			args = append(args, "--plain", "--volunteers")
		}
		links[enc] = senderB(b, filepath.Join(dir, "meshup"), append(args, src)...)
	}

	var raw, plain, encr float64
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		raw += rawTCPFile(b, src, dst, size)
		check(b, dst, size, sum)
		for _, enc := range []bool{false, true} {
			os.Remove(dst)
			start := time.Now()
			out, err := exec.Command(filepath.Join(dir, "meshup"), "get", "-o", dst, links[enc]).CombinedOutput()
			el := time.Since(start)
			if err != nil {
				b.Fatalf("meshup get (encrypted %v): %v\n%s", enc, err, out)
			}
			check(b, dst, size, sum)
			if enc {
				encr += float64(size) / el.Seconds()
			} else {
				plain += float64(size) / el.Seconds()
			}
		}
		os.Remove(dst)
	}
	b.StopTimer()
	n := float64(b.N)
	raw, plain, encr = raw/n, plain/n, encr/n
	b.ReportMetric(raw/1e6, "raw_MB/s")
	b.ReportMetric(plain/1e6, "plain_MB/s")
	b.ReportMetric(encr/1e6, "encrypted_MB/s")
	b.ReportMetric(encr/plain, "enc/plain")
	b.ReportMetric(encr/raw, "enc/raw")
	fmt.Printf("file->file %d MiB: raw loopback TCP %6.0f MB/s | meshup send->relay->get: plain %6.0f MB/s, encrypted %6.0f MB/s | encrypted/plain %.2f | encrypted/raw %.2f | plain/raw %.2f\n",
		size>>20, raw/1e6, plain/1e6, encr/1e6, encr/plain, encr/raw, plain/raw)
}

// rawTCPFile copies src to dst through a loopback TCP connection and
// returns the rate in bytes per second.
func rawTCPFile(b *testing.B, src, dst string, size int64) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		f, err := os.Open(src)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		_, err = io.CopyBuffer(c, f, make([]byte, 256<<10))
		errc <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	f, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.CopyBuffer(f, c, make([]byte, 256<<10))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	el := time.Since(start)
	if err != nil || n != size {
		b.Fatalf("raw TCP copied %d bytes: %v", n, err)
	}
	if err := <-errc; err != nil {
		b.Fatalf("raw TCP sender: %v", err)
	}
	return float64(size) / el.Seconds()
}

func writeRandom(b *testing.B, path string, size int64) []byte {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{7})
	if _, err := io.CopyN(io.MultiWriter(f, h), rng, size); err != nil {
		b.Fatal(err)
	}
	return h.Sum(nil)
}

func check(b *testing.B, path string, size int64, sum []byte) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), sum) {
		b.Fatalf("%s: %d bytes, %v, or SHA-256 differs", path, n, err)
	}
}

func freePortB(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startB runs a binary for the benchmark's life.
func startB(b *testing.B, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	log := &lockedBuffer{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if b.Failed() {
			b.Logf("--- %s stderr:\n%s", filepath.Base(bin), log.String())
		}
	})
	return cmd
}

// senderB runs meshup send and returns the first line it prints (the
// share link).
func senderB(b *testing.B, bin string, args ...string) string {
	link, _ := sendB(b, bin, args...)
	return link
}

// startBenchRendezvous starts the rendezvous binary of dir on a free
// loopback port, waits until it answers, and returns its URL.
func startBenchRendezvous(b *testing.B, dir string) string {
	port := freePortB(b)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	startB(b, filepath.Join(dir, "rendezvous"), "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--public-url", rdv, "--stun", "127.0.0.1:0", "--allow-private-addrs")
	meshtest.Eventually(b, 20*time.Second, "rendezvous", func() bool { return liveRelays(rdv) != nil })
	return rdv
}
