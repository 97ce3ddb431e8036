"""Server versions of the TWS API protocol that change a message layout we produce or read.

Named after the official ``MIN_SERVER_VER_*`` constants. ib_insync 0.9.86 offers
157..176, ib_async 2.x offers 157..178; the simulator serves up to 178.
"""

from __future__ import annotations

MIN_SERVER_VERSION = 157
MAX_SERVER_VERSION = 178

DURATION = 158  # openOrder/completedOrder carry duration
POST_TO_ATS = 160  # placeOrder/openOrder carry postToAts
AUTO_CANCEL_PARENT = 162  # placeOrder/openOrder carry autoCancelParent
SIZE_RULES = 164  # contractDetails: minSize/sizeIncrement/suggestedSizeIncrement
ADVANCED_ORDER_REJECT = 166  # error messages carry advancedOrderRejectJson
MANUAL_ORDER_TIME = 169  # cancelOrder carries manualOrderCancelTime
PEGBEST_PEGMID_OFFSETS = 170  # placeOrder/openOrder carry the peg offsets
BOND_ISSUERID = 176  # reqContractDetails sends issuerId; symbolSamples add description
FA_PROFILE_DESUPPORT = 177  # openOrder/completedOrder drop faProfile
PENDING_PRICE_REVISION = 178  # execDetails add pendingPriceRevision
