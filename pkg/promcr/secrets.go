package promcr

import (
	"context"
	"errors"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ErrKeyNotFound is returned for a Secret or ConfigMap that exists but
// lacks the key.
var ErrKeyNotFound = errors.New("promcr: key not found")

// APISecrets is a [SecretGetter] that reads from the Kubernetes API with
// GETs (RBAC: get on secrets and configmaps), as Prometheus Operator does.
// It keeps every object it read for its own lifetime, so a Secret shared by
// many resources is read once; a new APISecrets sees rotated ones. Safe
// for concurrent use.
type APISecrets struct {
	ctx    context.Context
	client kubernetes.Interface

	mu        sync.Mutex
	secrets   map[string]*corev1.Secret
	cms       map[string]*corev1.ConfigMap
	errs      map[string]error
	transient error
}

// NewAPISecrets returns a getter whose reads use ctx.
func NewAPISecrets(ctx context.Context, client kubernetes.Interface) *APISecrets {
	return &APISecrets{
		ctx: ctx, client: client,
		secrets: map[string]*corev1.Secret{}, cms: map[string]*corev1.ConfigMap{}, errs: map[string]error{},
	}
}

// Secret returns the value of key in the Secret namespace/name.
func (a *APISecrets) Secret(namespace, name, key string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := "secret/" + namespace + "/" + name
	s, ok := a.secrets[id]
	if !ok {
		if err, failed := a.errs[id]; failed {
			return "", err
		}
		var err error
		s, err = a.client.CoreV1().Secrets(namespace).Get(a.ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", a.fail(id, err)
		}
		a.secrets[id] = s
	}
	if v, ok := s.Data[key]; ok {
		return string(v), nil
	}
	if v, ok := s.StringData[key]; ok {
		return v, nil
	}
	return "", ErrKeyNotFound
}

// ConfigMap returns the value of key in the ConfigMap namespace/name.
func (a *APISecrets) ConfigMap(namespace, name, key string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := "configmap/" + namespace + "/" + name
	cm, ok := a.cms[id]
	if !ok {
		if err, failed := a.errs[id]; failed {
			return "", err
		}
		var err error
		cm, err = a.client.CoreV1().ConfigMaps(namespace).Get(a.ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", a.fail(id, err)
		}
		a.cms[id] = cm
	}
	if v, ok := cm.Data[key]; ok {
		return v, nil
	}
	if v, ok := cm.BinaryData[key]; ok {
		return string(v), nil
	}
	return "", ErrKeyNotFound
}

// fail remembers a failed read. Not found and forbidden are answers about
// the resource (it refers to something missing or not allowed); anything
// else is a failure to ask, which Transient reports.
func (a *APISecrets) fail(id string, err error) error {
	a.errs[id] = err
	if !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) && a.transient == nil {
		a.transient = err
	}
	return err
}

// renew prepares the getter for another generation: reads use ctx, and
// failed reads are tried again (the objects read successfully are kept
// until the getter is replaced).
func (a *APISecrets) renew(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ctx = ctx
	clear(a.errs)
	a.transient = nil
}

// Transient returns the first read that failed for a reason other than
// the object being missing or forbidden (API server unreachable, timeout,
// ...): resources skipped because of it may be fine, so the result of a
// generation that saw one should not replace a good one.
func (a *APISecrets) Transient() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.transient
}
