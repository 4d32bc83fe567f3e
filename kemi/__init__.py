"""The Kamailio KEMI script and kamailio.cfg; built in issue 5."""
