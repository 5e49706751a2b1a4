"""A site's identities: certificate authority, broker TLS config and ACL, unit enrolment (`cedge site`)."""
