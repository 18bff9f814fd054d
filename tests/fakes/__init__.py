"""Home of the local HTTP emulators of SaaS APIs (Stripe, HubSpot, Google).

The file and database sources shipped so far are tested against real files and real servers;
each SaaS connector adds its emulator here, implementing the vendor's pagination, filtering,
rate-limit and error semantics as the vendor specifications describe them.
"""
