"""The meshtrace sidecar proxy."""
