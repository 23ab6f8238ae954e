"""Organizations, the group tree, memberships, invitations, role bindings and authorize()."""
