"""hotspot_erc.hotspots"""
