package tlsserve_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/tlsserve"
)

// TestDevCA: a server with a DevCA's configuration completes a TLS
// handshake with a client trusting the CA, for 127.0.0.1, ::1 and
// localhost, and not for another name nor with the system roots; the PEM
// holds the CA certificate only, a CA constrained to loopback names.
func TestDevCA(t *testing.T) {
	ca, err := tlsserve.NewDevCA()
	if err != nil {
		t.Fatal(err)
	}
	blk, rest := pem.Decode(ca.CertPEM)
	if blk == nil || blk.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("CertPEM: got %v and %d bytes more, want one certificate", blk, len(rest))
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.IsCA || !cert.PermittedDNSDomainsCritical || len(cert.PermittedIPRanges) != 2 || time.Until(cert.NotAfter) > tlsserve.DevCAValidity {
		t.Errorf("CA certificate: CA %v, constraints %v %v, until %v; want a CA constrained to loopback for at most %v",
			cert.IsCA, cert.PermittedDNSDomains, cert.PermittedIPRanges, cert.NotAfter, tlsserve.DevCAValidity)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	dial := func(name string, pool *x509.CertPool) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{ServerName: name, RootCAs: pool})
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := dial(name, ca.Pool); err != nil {
			t.Errorf("handshake for %s trusting the CA: %v", name, err)
		}
	}
	if err := dial("example.com", ca.Pool); err == nil {
		t.Error("handshake for example.com: no error, want a name mismatch")
	}
	if err := dial("127.0.0.1", nil); err == nil {
		t.Error("handshake with the system roots: no error, want an unknown authority")
	}
}
