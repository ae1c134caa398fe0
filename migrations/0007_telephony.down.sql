DROP TABLE IF EXISTS phone_numbers;
DROP TABLE IF EXISTS sip_trunks;
