"""hotspot_erc.data"""
