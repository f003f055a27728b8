package main

// TLS for tkms serve (and tkms dev when given certificate files): the
// configuration's TLS keys and their checks, and the rule that plain HTTP
// is served on loopback only unless the configuration says a proxy
// terminates TLS. The certificate source, which follows its files, is
// internal/tlscert.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/tkms-dev/tkms/internal/tlscert"
)

// tlsEnabled reports whether the configuration names certificate files.
func (c *Config) tlsEnabled() bool {
	return c.TLSCertFile != "" || c.TLSKeyFile != ""
}

// validateTLS checks the TLS keys of the configuration at time now: both
// files or neither, a pair that loads and is valid now, and, without TLS,
// a loopback listen address unless plain_http says a proxy terminates TLS.
func (c *Config) validateTLS(now time.Time) []error {
	var errs []error
	switch {
	case c.TLSCertFile == "" && c.TLSKeyFile == "":
		if c.PlainHTTP {
			break
		}
		if host, _, err := net.SplitHostPort(c.Listen); err == nil && !loopbackHost(host) {
			errs = append(errs, fmt.Errorf("listen %s is not a loopback address and TLS is not configured: "+
				"set tls_cert_file and tls_key_file to serve HTTPS, or \"plain_http\": true if a TLS-terminating proxy "+
				"on the same host or a trusted network carries the traffic", c.Listen))
		}
	case c.TLSCertFile == "":
		errs = append(errs, errors.New("tls_key_file is set without tls_cert_file: give both or neither"))
	case c.TLSKeyFile == "":
		errs = append(errs, errors.New("tls_cert_file is set without tls_key_file: give both or neither"))
	default:
		if c.PlainHTTP {
			errs = append(errs, errors.New("plain_http is true but tls_cert_file and tls_key_file are set: remove one or the other"))
		}
		if _, err := tlscert.LoadPair(c.TLSCertFile, c.TLSKeyFile, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// loopbackHost reports whether host, the host part of a listen address,
// is loopback: an IP literal in 127.0.0.0/8 or ::1, or "localhost". An
// empty host means every interface.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkPlainListen refuses plain HTTP on a bound address that is not
// loopback (a host name that resolved elsewhere) unless plain_http allows
// it.
func checkPlainListen(cfg *Config, addr net.Addr) error {
	if cfg.tlsEnabled() || cfg.PlainHTTP {
		return nil
	}
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("listen %s bound %s, which is not loopback, and TLS is not configured: set tls_cert_file and tls_key_file, or \"plain_http\": true behind a TLS-terminating proxy", cfg.Listen, addr)
}

// checkDevListen is tkms dev's rule: plain HTTP on a loopback address
// only (plain_http does not apply), any address with TLS.
func checkDevListen(cfg *Config) error {
	if cfg.tlsEnabled() {
		return nil
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil || loopbackHost(host) {
		return nil // Validate reports a malformed address
	}
	listen := cfg.Listen
	return fmt.Errorf("%w: --listen %s is not a loopback address: tkms dev serves plain HTTP on loopback only; listen on 127.0.0.1 (127.0.0.1:0 picks a free port), or give tls_cert_file and tls_key_file in --config", errUsage, listen)
}

// newServerTLS returns the TLS configuration cfg asks for, or nil for
// plain HTTP.
func newServerTLS(cfg *Config, log *slog.Logger) (*tls.Config, error) {
	if !cfg.tlsEnabled() {
		return nil, nil
	}
	r, err := tlscert.NewReloader(cfg.TLSCertFile, cfg.TLSKeyFile, log, time.Now)
	if err != nil {
		return nil, err
	}
	return tlscert.ServerConfig(r.GetCertificate), nil
}
