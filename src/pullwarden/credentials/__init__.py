"""Docker configs, pull secrets, the credential keyring and the kubelet's credential hash."""
