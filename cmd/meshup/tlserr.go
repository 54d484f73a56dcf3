package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// errUntrusted means a server's TLS certificate did not verify: an
// authority this machine does not trust (a `meshup dev --tls` CA), a name
// it was not issued for, or an expired one. Trying again cannot help.
var errUntrusted = errors.New("the server's TLS certificate is not trusted")

// untrusted returns err with a hint when it is a certificate verification
// error, else nil.
func untrusted(err error) error {
	var (
		cv *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		hn x509.HostnameError
		ci x509.CertificateInvalidError
	)
	if err == nil || !errors.As(err, &cv) && !errors.As(err, &ua) && !errors.As(err, &hn) && !errors.As(err, &ci) {
		return nil
	}
	return fmt.Errorf("%w (for `meshup dev --tls`, trust its CA: SSL_CERT_FILE=DIR/ca.pem with --tls-dir DIR): %w", errUntrusted, err)
}
