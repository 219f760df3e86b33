package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
)

// tlsOptions are the --web.tls-* flags: serve the HTTP listener over TLS,
// optionally requiring client certificates (mTLS). The Target Allocator
// API shows the secrets of /scrape_configs only to requests that came over
// TLS, as the OTel Target Allocator does, so a Collector that needs its
// scrape credentials must reach the discoverer this way.
//
// Certificates are read once at start; replacing them needs a restart.
type tlsOptions struct {
	certFile, keyFile, clientCAFile string
}

func (o *tlsOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.certFile, "web.tls-cert-file", "", "Serve HTTPS with this PEM certificate (chain); needs --web.tls-key-file. /scrape_configs shows secrets only over TLS.")
	fs.StringVar(&o.keyFile, "web.tls-key-file", "", "PEM key of --web.tls-cert-file.")
	fs.StringVar(&o.clientCAFile, "web.tls-client-ca-file", "", "Require client certificates signed by these PEM CA certificates (mTLS); needs --web.tls-cert-file.")
}

// config returns the server TLS configuration, nil when TLS is off, or an
// error naming the flag that is wrong.
func (o *tlsOptions) config() (*tls.Config, error) {
	switch {
	case o.certFile == "" && o.keyFile == "" && o.clientCAFile == "":
		return nil, nil
	case o.certFile == "" && o.keyFile == "":
		return nil, errors.New("--web.tls-client-ca-file needs --web.tls-cert-file and --web.tls-key-file: client certificates are only asked for over TLS")
	case o.certFile == "":
		return nil, errors.New("--web.tls-key-file is set but --web.tls-cert-file is not")
	case o.keyFile == "":
		return nil, errors.New("--web.tls-cert-file is set but --web.tls-key-file is not")
	}
	cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
	if err != nil {
		return nil, fmt.Errorf("load --web.tls-cert-file=%s and --web.tls-key-file=%s: %w", o.certFile, o.keyFile, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if o.clientCAFile != "" {
		pool, err := loadCertPool(o.clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("--web.tls-client-ca-file: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
