package tlsserve

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// DevCA is a certificate authority made in memory for `meshup dev --tls`,
// with one server certificate it signed for loopback (127.0.0.1, ::1,
// localhost). Its keys never leave the process; only the CA certificate
// (CertPEM) is handed out, for users to trust (curl --cacert, or
// SSL_CERT_FILE for meshup, which Go honours on Linux). A new CA is made
// at every start, so a certificate trusted once stops working at the next
// start: nothing to revoke, nothing left on disk.
type DevCA struct {
	CertPEM []byte          // the CA certificate, PEM
	Pool    *x509.CertPool  // holds the CA certificate only
	leaf    tls.Certificate // the loopback server certificate and key
}

// DevCAValidity is how long the certificates of a DevCA are valid.
const DevCAValidity = 7 * 24 * time.Hour

// NewDevCA makes a CA and a loopback server certificate, both ECDSA P-256,
// valid for DevCAValidity from now (and an hour before, for clocks).
func NewDevCA() (*DevCA, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsserve: dev CA key: %w", err)
	}
	ca := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "meshup dev CA " + now.UTC().Format(time.RFC3339), Organization: []string{"meshup dev (local, in memory)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(DevCAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// The CA signs loopback server certificates only.
		PermittedDNSDomains:         []string{"localhost"},
		PermittedIPRanges:           []*net.IPNet{{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}, {IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)}},
		PermittedDNSDomainsCritical: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("tlsserve: dev CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsserve: dev server key: %w", err)
	}
	leaf := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(DevCAValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("tlsserve: dev server certificate: %w", err)
	}
	d := &DevCA{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Pool:    x509.NewCertPool(),
		leaf:    tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey},
	}
	d.Pool.AddCert(caCert)
	return d, nil
}

// ServerConfig returns the TLS configuration of a loopback server with
// the CA's server certificate. HTTP/1.1 only: WebSocket upgrades need it.
func (d *DevCA) ServerConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{d.leaf},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // never fails; see crypto/rand
	return n
}
