-- The bot's four tables exactly as shared/legacy-schema.md describes production
-- (December 2025). Run only in a database of this project's own (embedded demo, tests):
-- never against production, which belongs to the Node.js bot.

CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

CREATE TABLE whatsapp_auth (
    company_id text NOT NULL,
    creds jsonb NOT NULL,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    CONSTRAINT whatsapp_auth_pkey PRIMARY KEY (company_id)
);
CREATE INDEX idx_whatsapp_auth_company ON whatsapp_auth (company_id);
CREATE TRIGGER update_whatsapp_auth_updated_at
    BEFORE UPDATE ON whatsapp_auth
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE TABLE whatsapp_keys (
    company_id text NOT NULL,
    key_type text NOT NULL,
    key_id text NOT NULL,
    value jsonb NOT NULL,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    expires_at timestamptz,
    CONSTRAINT whatsapp_keys_pkey PRIMARY KEY (company_id, key_type, key_id)
);
CREATE INDEX idx_whatsapp_keys_company ON whatsapp_keys (company_id);
CREATE INDEX idx_whatsapp_keys_type ON whatsapp_keys (key_type);
CREATE INDEX idx_whatsapp_keys_type_company ON whatsapp_keys (key_type, company_id);
CREATE INDEX idx_whatsapp_keys_expires ON whatsapp_keys (expires_at)
    WHERE expires_at IS NOT NULL;
-- A duplicate of the previous index, present in production.
CREATE INDEX idx_whatsapp_keys_expires_cleanup ON whatsapp_keys (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TRIGGER update_whatsapp_keys_updated_at
    BEFORE UPDATE ON whatsapp_keys
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE TABLE companies (
    id serial NOT NULL,
    company_id integer NOT NULL,
    yclients_id integer,
    title varchar(255),
    address varchar(500),
    phone varchar(50),
    email varchar(255),
    website varchar(255),
    timezone varchar(100),
    working_hours varchar(255),
    coordinate_lat numeric,
    coordinate_lon numeric,
    currency varchar(10),
    ai_enabled boolean DEFAULT false,
    sync_enabled boolean DEFAULT true,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP,
    last_sync_at timestamp,
    raw_data jsonb,
    whatsapp_enabled boolean DEFAULT false,
    whatsapp_config jsonb,
    whatsapp_connected boolean DEFAULT false,
    whatsapp_phone varchar(50),
    whatsapp_connected_at timestamp,
    integration_status varchar(100),
    connected_at timestamp,
    marketplace_user_id varchar(255),
    marketplace_user_name varchar(255),
    marketplace_user_email varchar(255),
    marketplace_user_phone varchar(50),
    whatsapp_session_data jsonb,
    api_key varchar(255),
    webhook_secret varchar(255),
    last_payment_date timestamp,
    subscription_expires_at timestamptz,
    whatsapp_channel_enabled boolean DEFAULT true,
    sms_channel_enabled boolean DEFAULT false,
    sms_short_names text[],
    disconnected_at timestamptz,
    status varchar(50),
    telegram_enabled boolean DEFAULT false,
    telegram_premium_until timestamp,
    CONSTRAINT companies_pkey PRIMARY KEY (id)
);
CREATE INDEX idx_companies_company_id ON companies (company_id);
CREATE INDEX idx_companies_status ON companies (status);
CREATE INDEX idx_companies_subscription_expires ON companies (subscription_expires_at);
CREATE INDEX idx_companies_yclients_id ON companies (yclients_id);

CREATE TABLE clients (
    id serial NOT NULL,
    yclients_id integer NOT NULL,
    name varchar(255),
    phone varchar(50) NOT NULL,
    raw_phone varchar(50),
    email varchar(255),
    discount numeric,
    company_id integer,
    branch_ids integer[],
    tags text[],
    status varchar(50),
    source varchar(100),
    created_at timestamp DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP,
    visit_count integer DEFAULT 0,
    total_spent numeric,
    first_visit_date date,
    last_visit_date date,
    last_services text[],
    visit_history jsonb,
    preferences jsonb,
    last_sync_at timestamp,
    loyalty_level varchar(50),
    client_segment varchar(50),
    average_bill numeric,
    last_service_ids integer[],
    favorite_staff_ids integer[],
    preferred_time_slots varchar(50)[],
    blacklisted boolean DEFAULT false,
    notes text,
    created_by_ai boolean DEFAULT false,
    last_ai_interaction timestamp,
    ai_context jsonb,
    ai_messages_count integer DEFAULT 0,
    ai_satisfaction_score numeric,
    services_amount numeric,
    goods_amount numeric,
    goods_purchases jsonb,
    goods_count integer DEFAULT 0,
    CONSTRAINT clients_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX clients_yclients_company_unique ON clients (yclients_id, company_id);
CREATE UNIQUE INDEX idx_clients_yclients_id ON clients (yclients_id);
CREATE INDEX idx_clients_company_id ON clients (company_id);
CREATE INDEX idx_clients_last_visit_date ON clients (last_visit_date);
CREATE INDEX idx_clients_phone ON clients (phone);
