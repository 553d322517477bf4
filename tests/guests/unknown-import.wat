;; Hostile fixture: a component that imports an interface the netshim host
;; does not provide. The host must refuse it at load time (instantiate_pre)
;; with an error that names "evil:net/raw-socket@1.0.0".
(component
  (import "evil:net/raw-socket@1.0.0" (instance
    (export "open" (func (param "port" u16)))
  ))
)
